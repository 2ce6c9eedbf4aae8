#!/usr/bin/env bash
# Builds FerretDB (the MongoDB wire protocol on SQLite, pure Go) for the MongoDB result-store
# tests, cached by version under target/ferretdb/<version>/ferretdb, and prints the binary's path.
#
# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a binary that panics at
# start: the module zip lacks build/version/version.txt. So the module is downloaded through the
# Go module proxy, the file is written, and it is built from that copy (Go >= 1.22, ~1 minute).
#
# Usage: scripts/ferretdb.sh            build if missing; print the path
#        scripts/ferretdb.sh --start DIR  also start it on 127.0.0.1:<free port> with its SQLite
#                                       files in DIR (foreground; logs `Listening on TCP ...`)
set -euo pipefail

VERSION=v1.24.2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${CS_FERRETDB_CACHE:-$ROOT/target/ferretdb/$VERSION}"
BIN="$CACHE/ferretdb"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

# FerretDB needs Go >= 1.22; Debian bookworm's golang-go is 1.19. An older go fetches a newer
# toolchain as a module from the Go module proxy (golang.org/toolchain) and builds with that.
go_minor=$("$GO" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [[ ! -x "$BIN" && ( -z "$go_minor" || "$go_minor" -lt 22 ) ]]; then
    case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
    toolchain=$("$GO" mod download -json "golang.org/toolchain@v0.0.1-go1.22.12.linux-$arch" \
        | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    # Module files are read-only and not executable: copy the toolchain and mark its tools.
    rm -rf "$CACHE/go" && mkdir -p "$CACHE" && cp -r "$toolchain" "$CACHE/go"
    chmod -R u+w "$CACHE/go" && chmod +x "$CACHE/go/bin/"* "$CACHE/go/pkg/tool/"*/*
    GO="$CACHE/go/bin/go"
fi

if [[ ! -x "$BIN" ]]; then
    mkdir -p "$CACHE"
    work=$(mktemp -d)
    trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
    dir=$("$GO" mod download -json "github.com/FerretDB/FerretDB@$VERSION" \
        | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    [[ -n "$dir" && -d "$dir" ]] || { echo "ferretdb.sh: go mod download gave no Dir" >&2; exit 1; }
    cp -r "$dir" "$work/src"
    chmod -R u+w "$work/src"
    echo "$VERSION" > "$work/src/build/version/version.txt"
    (cd "$work/src" && GOTOOLCHAIN=local "$GO" build -trimpath -o "$BIN.tmp" ./cmd/ferretdb)
    mv "$BIN.tmp" "$BIN"
    echo "ferretdb.sh: built $BIN" >&2
fi

if [[ "${1:-}" == "--start" ]]; then
    data="${2:?usage: ferretdb.sh --start DIR}"
    mkdir -p "$data"
    exec "$BIN" --handler=sqlite --sqlite-url="file:$(cd "$data" && pwd)/" \
        --listen-addr=127.0.0.1:0 --state-dir=- --debug-addr=- --telemetry=disable
fi
echo "$BIN"
