#!/bin/sh
# Installs the Debian packages git-model needs to build and test.
# Idempotent and non-interactive: does nothing when all are present.
# Usage: contrib/install-deps.sh [--fuzz]   (--fuzz adds clang for 'make fuzz')
set -e

packages="build-essential autoconf automake libtool pkg-config
	libgit2-dev libsqlite3-dev libarchive-dev libcurl4-openssl-dev libssl-dev libjson-c-dev
	libpcre2-dev libutf8proc-dev libmicrohttpd-dev libtorrent-rasterbar-dev opentracker
	git git-lfs python3 python3-jsonschema man-db bash-completion xz-utils curl fuse-overlayfs xfsprogs
	chromium"
[ "$1" = "--fuzz" ] && packages="$packages clang libclang-rt-14-dev"
# libtorrent-rasterbar (C++, built with build-essential's g++) gives peer-to-peer
# transfers (git model seed, --p2p; optional: configure --without-torrent);
# opentracker is the tracker t5000-p2p.sh runs.
# Chromium (headless) runs the server's web page in t6004-web.sh.
# Node.js and npm drive the server tests (the openai npm package).  A Node.js
# installed otherwise (NodeSource's nodejs bundles npm and conflicts with
# Debian's npm package) is used as it is; only a machine with neither gets
# Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	packages="$packages nodejs npm"
fi

missing=
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing"
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing
