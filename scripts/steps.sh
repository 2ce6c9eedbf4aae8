# Step timing for .ci/run and scripts/test (sourced, not run): `step NAME [WHAT]` ends the step
# before it (printing its seconds) and starts NAME; `steps_summary` ends the last step and prints
# one line per step and the total, so a CI log says where its minutes went. Both scripts call
# steps_summary from their EXIT trap with the exit status, so a failed run still shows how far it
# got, at what cost, and which step failed.

steps_started=$SECONDS
steps_table=()
steps_name=
steps_start=

# $1: what to add to the step's line (empty, or " FAILED").
steps_end() {
    [[ -n "$steps_name" ]] || return 0
    local took=$((SECONDS - steps_start))
    echo "-- $steps_name: ${took} s${1:-}"
    steps_table+=("$(printf '%6d s  %s%s' "$took" "$steps_name" "${1:-}")")
    steps_name=
}

step() {
    steps_end
    steps_name=$1
    steps_start=$SECONDS
    shift
    echo "== $steps_name${1:+: $*}"
}

# $1: whose steps (printed in the heading); $2: the script's exit status.
steps_summary() {
    local failed=
    [[ "${2:-0}" == 0 ]] || failed=" FAILED"
    steps_end "$failed"
    echo "== time per step ($1)"
    printf '%s\n' "${steps_table[@]}"
    printf '%6d s  total\n' $((SECONDS - steps_started))
}
