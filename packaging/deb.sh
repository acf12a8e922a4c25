#!/bin/sh
# Builds the Debian packages (pigato-broker, pigato-tools, libpigato0,
# libpigato-dev) with debhelper from a copy of the tree, then runs lintian
# on them. make deb calls it:
#   packaging/deb.sh OUTDIR        packages and .changes in OUTDIR
# Needs debhelper, fakeroot (dpkg-buildpackage) and lintian, and the
# Build-Depends of packaging/debian/control. Exits non-zero if the build
# fails or lintian reports an error or a warning (what is overridden is
# explained in packaging/debian/*.lintian-overrides).
set -eu
out=${1:?usage: packaging/deb.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in dpkg-buildpackage dh fakeroot lintian; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "deb: $tool is missing: apt-get install debhelper fakeroot lintian" >&2
        exit 1
    fi
done
version=$(sed -n 's/^VERSION := //p' "$root/Makefile")
mkdir -p "$out"
out=$(cd "$out" && pwd)
src="$out/pigato-c-$version"
rm -rf "$src" "$out"/*.deb "$out"/*.ddeb "$out"/*.changes "$out"/*.buildinfo
mkdir -p "$src"
# The tree without build output (build*/, also OUTDIR if it is inside)
tar -C "$root" --exclude=./.git --exclude='./build*' --exclude=__pycache__ \
    --exclude=node_modules -cf - . | tar -C "$src" -xf -
cp -r "$root/packaging/debian" "$src/debian"
echo "deb: building in $src"
(cd "$src" && dpkg-buildpackage -b -us -uc -j"$(nproc)") >"$out/build.log" 2>&1 || {
    tail -n 40 "$out/build.log" >&2
    echo "deb: dpkg-buildpackage failed (all of it in $out/build.log)" >&2
    exit 1
}
rm -rf "$src"
ls "$out"/*.deb
echo "deb: lintian"
lintian --fail-on error,warning --display-info "$out"/*.changes
