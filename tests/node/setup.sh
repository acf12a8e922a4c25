#!/bin/sh
# Installs the Node interop peers' npm packages into BUILD/node (ignored by
# git) on first use and reuses them afterwards; refreshes the zmq shim.
#   tests/node/setup.sh BUILD_DIR
# Exit 0 = ready (prints the node_modules path), 77 = node/npm unavailable,
# other = install failed.
set -e
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: setup.sh BUILD_DIR}
mkdir -p "$build"
dest=$(cd "$build" && pwd)/node

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: node or npm not found" >&2
    exit 77
fi

mkdir -p "$dest"
# The shim is copied every time: cheap, and edits take effect at once.
rm -rf "$dest/zmq-shim"
cp -R "$here/zmq-shim" "$dest/zmq-shim"

stamp=$(cat "$here/package.json" "$here/package-lock.json" 2>/dev/null | cksum | cut -d' ' -f1)
if [ -f "$dest/.installed" ] && [ "$(cat "$dest/.installed")" = "$stamp" ] \
   && [ -d "$dest/node_modules/pigato" ] && [ -d "$dest/node_modules/zeromq" ]; then
    echo "$dest/node_modules"
    exit 0
fi

cp "$here/package.json" "$dest/package.json"
[ -f "$here/package-lock.json" ] && cp "$here/package-lock.json" "$dest/package-lock.json"
echo "setup.sh: installing pigato@0.0.46 and zeromq@6 into $dest" >&2
# --ignore-scripts: pigato's own dependency tree has install scripts we do
# not need; zeromq@6 ships prebuilt binaries that load without its script.
( cd "$dest" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >&2 )
( cd "$dest" && node -e "require('zeromq'); require('zmq'); require('pigato')" ) >&2
echo "$stamp" > "$dest/.installed"
echo "$dest/node_modules"
