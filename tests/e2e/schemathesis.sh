#!/usr/bin/env bash
# Property-based API test: schemathesis generates requests from the served OpenAPI document and
# checks every answer against it (no 5xx, status codes, content types and bodies as documented).
#
# Starts the real binary on a temporary copy of the bundled external-tasks.yaml and collect/, on a
# free loopback port, and stops it afterwards. Needs schemathesis: python3 -m pip install schemathesis
#
# Environment:
#   CELERY_SERVICE_BIN   the binary to test (default: built here with `cargo build`)
#   ST_MAX_EXAMPLES      examples per operation (default 30; the whole run takes about a minute)
#   ST_SEED              replay a run with the seed it printed
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/tests/e2e"

if ! python3 -c 'import schemathesis' 2>/dev/null; then
    echo "schemathesis.sh: FAILED: the python module schemathesis is missing." >&2
    echo "  install it with: python3 -m pip install schemathesis" >&2
    exit 1
fi

if [[ -z "${CELERY_SERVICE_BIN:-}" ]]; then
    (cd "$repo" && cargo build --quiet)
    CELERY_SERVICE_BIN="$repo/target/debug/celery-service"
fi

tmp=$(mktemp -d)
pid=
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

cp "$repo/external-tasks.yaml" "$tmp/"
cp -r "$repo/collect" "$tmp/collect"
# No drain delay: the cleanup's SIGTERM should end it at once (nothing balances its load).
(cd "$tmp" && CS_DRAIN_DELAY=0s exec "$CELERY_SERVICE_BIN" run --address 127.0.0.1:0 --log-console \
    --external-task-config external-tasks.yaml --collect-dir collect --log-dir logs \
    >"$tmp/service.out" 2>&1) &
pid=$!

# The service prints "listening on 127.0.0.1:<port>" once it accepts connections.
addr=
for _ in $(seq 1 200); do
    addr=$(grep -o 'listening on [0-9.:]*' "$tmp/service.out" | head -n1 | cut -d' ' -f3 || true)
    [[ -n "$addr" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
if [[ -z "$addr" ]]; then
    echo "schemathesis.sh: FAILED: the service did not start:" >&2
    cat "$tmp/service.out" >&2
    exit 1
fi
echo "schemathesis.sh: service on http://$addr"

seed=()
[[ -n "${ST_SEED:-}" ]] && seed=(--seed "$ST_SEED")

# Every operation is tested. POST /sync/tendb-ha/counter answers after `counter` seconds (up to a
# day), so schemathesis_hooks.py brings large counters down to 2 seconds for that one operation;
# the request timeout turns any other hang into a failure instead of a stuck CI.
# GET /async/output-stream is left out: poem-openapi declares an event stream as an array of its
# events, and schemathesis 4.32 checks each server-sent event against that array schema, so every
# answer "violates" it. tests/output.rs reads that stream's events and checks their pages.
status=0
(cd "$tmp" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$here" \
    timeout 300 python3 -m schemathesis.cli run "http://$addr/openapi.json" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples "${ST_MAX_EXAMPLES:-30}" \
    --request-timeout 20 \
    --generation-database none \
    --no-color \
    --exclude-path /async/output-stream \
    "${seed[@]}") || status=$?

if [[ $status -ne 0 ]]; then
    echo "schemathesis.sh: FAILED (exit $status); the service's output:" >&2
    tail -n 50 "$tmp/service.out" >&2
    exit "$status"
fi
echo "schemathesis.sh: passed"
