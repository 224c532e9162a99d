#!/bin/sh
# Build Osprey and run every test (unit and integration) on a Debian 12
# machine.  Installs the packages it needs, so run it as root.
#
#   ./scripts/test.sh [extra configure options]       (as root)
#
# The build happens out of tree in ./build (or $OSP_BUILD_DIR).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${OSP_BUILD_DIR:-$top/build}

if [ "$(id -u)" = 0 ]; then
    "$top/.ci/install-deps"
else
    echo "test.sh: not root: skipping package installation" >&2
fi
[ -x "$top/configure" ] || "$top/autogen.sh"
mkdir -p "$build"
cd "$build"
"$top/configure" -q "$@"
make -j"$(nproc)"
status=0
make -j2 check || status=$?
"$top/scripts/test-summary.sh" "$build"
exit $status
