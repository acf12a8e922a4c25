#!/bin/sh
# Installs the Debian packages pigato-c needs, only those that are missing.
set -e
# libsystemd-dev: pigato-broker's sd_notify; systemd (systemd-analyze),
# debhelper, fakeroot and lintian: the tests of the units and of make deb
PKGS="build-essential pkg-config libzmq3-dev libczmq-dev libsodium-dev libssl-dev
      libjansson-dev libcmocka-dev libmicrohttpd-dev libsqlite3-dev python3-zmq
      python3-prometheus-client nodejs npm openssl clang-format
      libsystemd-dev systemd debhelper fakeroot lintian"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
# Node and npm may come from outside Debian (a nodesource build); accept them.
case "$missing" in *nodejs*|*npm*)
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        missing=$(echo "$missing" | sed -e 's/ nodejs//' -e 's/ npm//')
    fi ;;
esac
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "deps: need root to apt-get install$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
