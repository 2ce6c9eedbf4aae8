#!/bin/sh
# Refreshes the vendored swagger-ui-dist files from the npm registry: update.sh VERSION
set -eu
version=${1:?usage: update.sh VERSION}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack "swagger-ui-dist@$version" >/dev/null
tar xzf "swagger-ui-dist-$version.tgz"
for f in LICENSE NOTICE swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png; do
    cp "package/$f" "$here/$f"
done
sha256sum "swagger-ui-dist-$version.tgz"
