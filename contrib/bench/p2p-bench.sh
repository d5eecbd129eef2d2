#!/bin/sh
# p2p-bench.sh - download throughput of a model revision's LFS objects:
# the plain LFS transfer from the Hub stand-in (t/lib/hub-server.py) against
# BitTorrent (git model lfs-fetch --p2p) from 1, 2 and 3 seeders, peers only
# (model.p2p.webseed = false), everything on 127.0.0.1.
#
#   contrib/bench/p2p-bench.sh                       # build dir ./build
#   BUILD_DIR=/tmp/b HIDDEN=512 RUNS=3 LIMIT=10m HUB_DELAY_MS=6.25 contrib/bench/p2p-bench.sh
#
# HIDDEN sets the synthetic model's size (tiny shape, 2 layers; 512 gives
# model.safetensors of 160 MB); LIMIT (optional) caps every seeder's upload
# (--upload-limit), as a machine's uplink would on a real network: on one
# host with no limit, every source is as fast as the disk and the CPU.
# HUB_DELAY_MS (optional) slows the Hub stand-in down by that many ms per
# 64 KiB sent (6.25 is about 10 MiB/s), as a Hub serves one client.
# Runs of the configurations alternate (plain, 1, 2, 3, plain, 1, ...);
# the table gives the median, min and max in MB/s (10^6 bytes).
# Needs opentracker and python3.  Nothing here is part of make check.
set -e
SRC_DIR=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$SRC_DIR/build}
HIDDEN=${HIDDEN:-512}
RUNS=${RUNS:-3}
LIMIT=${LIMIT:-}
HUB_DELAY_MS=${HUB_DELAY_MS:-}
command -v opentracker >/dev/null || { echo "p2p-bench: opentracker is missing (apt-get install opentracker)" >&2; exit 1; }
W=$(mktemp -d /tmp/p2p-bench.XXXXXX)
PATH="$BUILD_DIR/git-model:$PATH"
export PATH GIT_CONFIG_NOSYSTEM=1
pids=
cleanup () {
	for p in $pids; do kill "$p" 2>/dev/null || :; done
	wait 2>/dev/null || :
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

on () { m=$1; shift; env HOME="$W/$m" XDG_CONFIG_HOME="$W/$m/.config" XDG_CACHE_HOME="$W/$m/.cache" "$@"; }
models () { echo "$W/$1/.local/share/git-model/models"; }
now () { date +%s.%N; }

cd "$W"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for m in S0 S1 S2 S3 D; do
	mkdir -p $m
	on $m git config --global user.name bench
	on $m git config --global user.email bench@localhost
	on $m git config --global model.p2p.tracker "http://127.0.0.1:$port/announce"
	on $m git config --global model.p2p.listen 127.0.0.1
	on $m git config --global model.p2p.lsd false
	on $m git config --global model.p2p.webseed false
	on $m git config --global model.p2p.timeout 20
done
echo "p2p-bench: synthesizing a model (hidden $HIDDEN) in $W" >&2
git model synth -q --hidden "$HIDDEN" --intermediate $((HIDDEN * 3)) --layers 2 tiny m
on S0 git model import -q m src
SRC=$(models S0)/src
on S0 git model seed --create-only src >magnet
mkdir -p hub/org tracker
git init -q --bare -b main hub/org/m.git
git -C "$SRC" push -q "$W/hub/org/m.git" "refs/heads/*:refs/heads/*" refs/notes/torrents
mkdir -p hub/org/m.git/lfs && cp -R "$SRC/.git/lfs/objects" hub/org/m.git/lfs/
sed -n 's/.*btmh:1220\([0-9a-f]\{40\}\).*/\1/p' magnet >tracker/whitelist
chmod 755 tracker
timeout 3600 opentracker -i 127.0.0.1 -p "$port" -P "$port" -d "$W/tracker" -w whitelist >tracker.out 2>&1 &
pids="$pids $!"
[ -n "$HUB_DELAY_MS" ] && echo "{\"delay_ms\": $HUB_DELAY_MS}" >faults.json
python3 "$SRC_DIR/t/lib/hub-server.py" --root "$W/hub" --port-file hub.port --log hub.log \
	--faults "$W/faults.json" >hub.out 2>&1 &
pids="$pids $!"
while ! [ -f hub.port ]; do sleep 0.1; done
export HF_ENDPOINT="http://127.0.0.1:$(cat hub.port)"
for m in S1 S2 S3; do on $m git model clone -q hf:org/m; done
on D git model clone -q --include config.json hf:org/m
oid=$(git -C "$(models D)/m" cat-file blob HEAD:model.safetensors | sed -n 's/^oid sha256://p')
size=$(git -C "$(models D)/m" cat-file blob HEAD:model.safetensors | sed -n 's/^size //p')
obj="$(models D)/m/.git/lfs/objects/$(echo "$oid" | cut -c1-2)/$(echo "$oid" | cut -c3-4)/$oid"

seeders=
start_seeders () { # N
	i=1
	while [ $i -le "$1" ]; do
		# exec: $! is the seeder itself
		(exec env HOME="$W/S$i" XDG_CONFIG_HOME="$W/S$i/.config" XDG_CACHE_HOME="$W/S$i/.cache" \
			git-model seed ${LIMIT:+--upload-limit "$LIMIT"} m) >seed$i.out 2>&1 &
		seeders="$seeders $!"
		until grep -qs " seeding " "$W/S$i"/.local/share/git-model/seeds/*.status; do sleep 0.1; done
		i=$((i + 1))
	done
}
stop_seeders () {
	for p in $seeders; do kill "$p"; wait "$p" 2>/dev/null || :; done
	seeders=
	rm -f "$W"/S*/.local/share/git-model/seeds/*.status
}

run () { # plain | p2p: seconds to get model.safetensors into D's store
	rm -f "$obj"
	rm -rf "$(models D)/m/.git/lfs/tmp"
	t0=$(now)
	if [ "$1" = plain ]; then
		(cd "$(models D)/m" && on D git model lfs-fetch -q)
	else
		(cd "$(models D)/m" && on D git model lfs-fetch -q --p2p)
	fi
	t1=$(now)
	[ "$(sha256sum <"$obj" | cut -c1-64)" = "$oid" ] || { echo "p2p-bench: wrong object" >&2; exit 1; }
	echo "$t0 $t1" | awk -v s="$size" '{ printf "%.1f\n", s / ($2 - $1) / 1e6 }'
}

: >results
r=1
while [ $r -le "$RUNS" ]; do
	echo "plain $(run plain)" >>results
	for n in 1 2 3; do
		start_seeders $n
		echo "p2p-$n $(run p2p)" >>results
		stop_seeders
	done
	r=$((r + 1))
done
echo "model.safetensors: $size bytes; runs: $RUNS; seeder upload limit: ${LIMIT:-none};" \
	"Hub delay: ${HUB_DELAY_MS:-0} ms per 64 KiB; $(uptime | sed 's/.*load/load/')"
printf "%-10s %8s %8s %8s   (MB/s)\n" source median min max
for k in plain p2p-1 p2p-2 p2p-3; do
	sed -n "s/^$k //p" results | sort -n | awk -v k="$k" '
		{ v[NR] = $1 }
		END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		      printf "%-10s %8.1f %8.1f %8.1f\n", k, m, v[1], v[NR] }'
done
