# Step timing for .ci/run and scripts/test (sourced, not run): `step NAME [WHAT]` ends the step
# before it (printing its seconds) and starts NAME; `steps_summary` ends the last step and prints
# one line per step and the total, so a CI log says where its minutes went. Both scripts call
# steps_summary from their EXIT trap with the exit status, so a failed run still shows how far it
# got, at what cost, and which step failed.
#
# Beside the wall time each line has the CPU time (user + system) of the step's finished child
# processes: on a machine shared with other work the wall time stretches, the CPU time much less,
# and CPU time over wall time says how well a step used the cores.

steps_started=$SECONDS
steps_table=()
steps_name=
steps_start=
steps_cpu_start=

# Sets steps_cpu_now to the CPU seconds of every finished child so far: the second line of bash's
# `times`, read without a subshell (a subshell's `times` counts only its own children).
steps_cpu_file=$(mktemp)
steps_cpu() {
    local self children um us sm ss
    times >"$steps_cpu_file"
    { read -r self; read -r children; } <"$steps_cpu_file"
    # "1m2.345s 0m6.789s": user, then system.
    children=${children//m/ }
    children=${children//s/}
    read -r um us sm ss <<<"$children"
    steps_cpu_now=$(((um + sm) * 60 + ${us%.*} + ${ss%.*}))
}

# $1: what to add to the step's line (empty, or " FAILED").
steps_end() {
    [[ -n "$steps_name" ]] || return 0
    local took=$((SECONDS - steps_start)) cpu
    steps_cpu
    cpu=$((steps_cpu_now - steps_cpu_start))
    echo "-- $steps_name: ${took} s (CPU ${cpu} s)${1:-}"
    steps_table+=("$(printf '%6d s %8d s  %s%s' "$took" "$cpu" "$steps_name" "${1:-}")")
    steps_name=
}

step() {
    steps_end
    steps_name=$1
    steps_start=$SECONDS
    steps_cpu
    steps_cpu_start=$steps_cpu_now
    shift
    echo "== $steps_name${1:+: $*}"
}

# $1: whose steps (printed in the heading); $2: the script's exit status.
steps_summary() {
    local failed=
    [[ "${2:-0}" == 0 ]] || failed=" FAILED"
    steps_end "$failed"
    echo "== time per step ($1)"
    printf '%8s %10s  %s\n' wall CPU step
    printf '%s\n' "${steps_table[@]}"
    steps_cpu
    printf '%6d s %8d s  total\n' $((SECONDS - steps_started)) "$steps_cpu_now"
    rm -f "$steps_cpu_file"
}
