#!/usr/bin/env bash
# Installs the Debian packages the tests and the benchmark use, those that are missing, so that
# `bash scripts/test` works as written on a fresh machine (as root, as these machines run) and
# .ci/run installs exactly the same set:
#   chromium        the Swagger UI browser test (tests/swagger_browser.rs);
#   redis-server    the broker of the Python client's Celery tests (they start their own);
#   systemd         `systemd-analyze verify` of deploy/celery-service.service (tests/systemd_unit.rs);
#   python3-venv    `python3 -m venv`, where the python3 on PATH is Debian's;
#   haproxy         the load balancer in front of two replicas (tests/load_balancer.rs);
#   webhook         the peer the benchmark compares against (bench/run.py);
#   golang-go       only where no Go is installed: it builds FerretDB (scripts/ferretdb.sh fetches a
#                   newer toolchain from the Go module proxy when Debian's is too old).
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v systemd-analyze >/dev/null || missing+=(systemd)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v webhook >/dev/null || missing+=(webhook)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] || missing+=(golang-go)

if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
    exit 1
fi
echo "== system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
