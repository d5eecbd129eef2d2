#!/bin/sh
# Installs the Debian packages (contrib/install-deps.sh) and builds git-model
# out of tree in build/.  Safe to re-run: only what changed is rebuilt.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh contrib/install-deps.sh
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc 2>/dev/null || echo 2)"
