#!/bin/sh
test_description='git model seed, clone/fetch/lfs-fetch --p2p: LFS objects over BitTorrent between machines on 127.0.0.1'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-hub.sh"

# Machines A, B, C and X are homes of their own under the trash directory
# (registry, git config, caches); they find each other through a real
# opentracker on 127.0.0.1, and the Hub stand-in (t/lib-hub.sh) is the web
# seed.  A publishes the model "src" to the Hub as org/tiny.

grep -q "^#define GM_HAVE_TORRENT 1" "$GM_BUILD_DIR/config.h" && test_set_prereq TORRENT
command -v opentracker >/dev/null 2>&1 && test_set_prereq OPENTRACKER

test_expect_success PYTHON3,!TORRENT 'without libtorrent, --p2p says so and uses the plain LFS transfer' '
	git model synth -q tiny m1 &&
	git model import -q m1 src &&
	start_hub_server &&
	hub_repo org/tiny &&
	git -C "$HOME/.local/share/git-model/models/src" push -q "$HUB_ROOT/org/tiny.git" "refs/heads/*:refs/heads/*" &&
	mkdir -p "$HUB_ROOT/org/tiny.git/lfs" &&
	cp -R "$HOME/.local/share/git-model/models/src/.git/lfs/objects" "$HUB_ROOT/org/tiny.git/lfs/" &&
	git model clone --p2p hf:org/tiny 2>err &&
	test_grep "P2P is not available (git-model was built without libtorrent-rasterbar)" err &&
	cmp m1/model.safetensors "$HOME/.local/share/git-model/models/tiny/model.safetensors" &&
	test_expect_code 1 git model seed src 2>err &&
	test_grep "built without libtorrent-rasterbar" err
'

if ! test_have_prereq TORRENT; then
	skip_all="git-model was built without libtorrent-rasterbar (configure found no libtorrent-rasterbar-dev)"
	test_done
fi
if ! test_have_prereq OPENTRACKER || ! test_have_prereq PYTHON3; then
	skip_all="needs opentracker and python3 (contrib/install-deps.sh installs them)"
	test_done
fi

models () { # MACHINE: its models directory
	echo "$TRASH_DIRECTORY/$1/.local/share/git-model/models"
}

on () { # MACHINE COMMAND...: COMMAND as run on MACHINE
	gm_m=$1
	shift
	env HOME="$TRASH_DIRECTORY/$gm_m" XDG_CONFIG_HOME="$TRASH_DIRECTORY/$gm_m/.config" \
		XDG_CACHE_HOME="$TRASH_DIRECTORY/$gm_m/.cache" "$@"
}

# start_seeder MACHINE ARGS...: "git model seed ARGS" in the background on
# MACHINE until stop_seeders (or five minutes, should the script die)
start_seeder () {
	gm_m=$1
	shift
	rm -f "$TRASH_DIRECTORY/$gm_m"/.local/share/git-model/seeds/*.status
	# exec: $! is the process that stops the seeder when killed
	(exec env HOME="$TRASH_DIRECTORY/$gm_m" XDG_CONFIG_HOME="$TRASH_DIRECTORY/$gm_m/.config" \
		XDG_CACHE_HOME="$TRASH_DIRECTORY/$gm_m/.cache" timeout 300 git-model seed "$@") \
		>>"$gm_m.seed.out" 2>&1 5>&- </dev/null &
	echo $! >>seeders.pids
	gm_i=0
	until grep -q " seeding " "$TRASH_DIRECTORY/$gm_m"/.local/share/git-model/seeds/*.status 2>/dev/null
	do
		gm_i=$((gm_i + 1))
		if [ $gm_i -gt 100 ]; then
			echo "the seeder on $gm_m did not start:" && cat "$gm_m.seed.out"
			return 1
		fi
		sleep 0.1
	done
}

stop_seeders () {
	if [ -f seeders.pids ]; then
		for p in $(cat seeders.pids); do
			kill $p 2>/dev/null
			wait $p 2>/dev/null
		done
		rm -f seeders.pids
	fi
	return 0
}

uploaded () { # MACHINE: bytes its seeder has sent
	sed -n "s/.* uploaded=\([0-9]*\) .*/\1/p" "$TRASH_DIRECTORY/$1"/.local/share/git-model/seeds/*.status
}

SRC=$(models A)/src

test_expect_success 'setup: A publishes a model and its torrent note; a tracker for the swarm' '
	git model synth -q tiny m1 &&
	for m in A B C X
	do
		mkdir -p $m &&
		on $m git config --global model.p2p.listen 127.0.0.1 &&
		on $m git config --global model.p2p.lsd false &&
		on $m git config --global model.p2p.timeout 10 || return 1
	done &&
	on A git model import -q m1 src &&
	on A git model seed --create-only src >magnet.out &&
	test_grep "^src magnet:?xt=urn:btmh:1220[0-9a-f]\{64\}&dn=$(git -C "$SRC" rev-parse HEAD)" magnet.out &&
	on A git model info src >info &&
	test_grep "^magnet: *magnet:?xt=urn:btmh:1220" info &&
	hub_repo org/tiny &&
	git -C "$HUB_ROOT/org/tiny.git" config http.receivepack true &&
	git -C "$SRC" push -q "$HUB_ROOT/org/tiny.git" "refs/heads/*:refs/heads/*" refs/notes/torrents &&
	mkdir -p "$HUB_ROOT/org/tiny.git/lfs" &&
	cp -R "$SRC/.git/lfs/objects" "$HUB_ROOT/org/tiny.git/lfs/" &&
	# opentracker (Debian builds it with a whitelist) knows the swarm by
	# the first 20 bytes of the v2 info-hash
	mkdir tracker &&
	sed -n "s/.*btmh:1220\([0-9a-f]\{40\}\).*/\1/p" magnet.out >tracker/whitelist &&
	chmod 755 tracker && chmod 644 tracker/whitelist &&
	port=$(python3 -c "import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])") &&
	{ timeout 600 opentracker -i 127.0.0.1 -p $port -P $port -d "$TRASH_DIRECTORY/tracker" -w whitelist \
		>tracker.out 2>&1 5>&- </dev/null & } &&
	echo $! >tracker.pid &&
	for m in A B C X
	do
		on $m git config --global model.p2p.tracker "http://127.0.0.1:$port/announce" || return 1
	done &&
	i=0 &&
	until curl -s "http://127.0.0.1:$port/stats" >/dev/null
	do
		i=$((i + 1)) && [ $i -lt 50 ] || return 1
		sleep 0.1
	done
'

test_expect_success 'A seeds; B and C clone --p2p with the Hub up, from A and the web seed' '
	start_hub_server &&
	echo "{\"delay_ms\": 20}" >"$HUB_FAULTS" &&
	start_seeder A --upload-limit 4m src &&
	on B git model clone -v --p2p hf:org/tiny 2>err &&
	test_grep "P2P: 2 of 2 objects from the swarm ([1-9][0-9]* bytes from peers" err &&
	test_grep "LFS: 2 objects present" err &&
	cmp m1/model.safetensors "$(models B)/tiny/model.safetensors" &&
	cmp m1/tokenizer.json "$(models B)/tiny/tokenizer.json" &&
	on B git model fsck tiny &&
	on B git model info tiny >info &&
	test_grep "^magnet: *$(sed -n "s/^src //p" magnet.out)" info &&
	test_path_is_missing "$(models B)/tiny/.git/lfs/tmp/p2p-"* &&
	start_seeder B --upload-limit 4m tiny &&
	on C git model clone -v --p2p hf:org/tiny 2>err &&
	test_grep "P2P: 2 of 2 objects from the swarm ([1-9][0-9]* bytes from peers" err &&
	cmp m1/model.safetensors "$(models C)/tiny/model.safetensors" &&
	on C git model fsck tiny
'

test_expect_success 'with the Hub down, C still completes from A and B' '
	start_hub_server &&
	on C git model clone -q --include tokenizer.json hf:org/tiny late &&
	test_grep "^oid sha256:" "$(models C)/late/model.safetensors" &&
	stop_hub_server &&
	sleep 1.2 && a0=$(uploaded A) && b0=$(uploaded B) &&
	(cd "$(models C)/late" && on C git model lfs-fetch -v --p2p --checkout) 2>err &&
	test_grep "P2P: 1 of 1 objects from the swarm" err &&
	cmp m1/model.safetensors "$(models C)/late/model.safetensors" &&
	on C git model fsck late &&
	sleep 1.2 &&
	test $(uploaded A) -gt $a0 &&
	test $(uploaded B) -gt $b0
'

test_expect_success 'a seeder whose store goes bad never gets bad data into C store' '
	stop_seeders &&
	start_hub_server &&
	on X git model clone -q hf:org/tiny &&
	start_seeder X tiny &&
	on C git model clone -q --p2p hf:org/tiny c3 &&
	on C git model fsck c3 &&
	# the object changes under the running seeder, after it checked
	# the pieces it served: it now sends bad blocks
	oid=$(git -C "$(models X)/tiny" cat-file blob HEAD:model.safetensors | sed -n "s/^oid sha256://p") &&
	obj="$(models X)/tiny/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid" &&
	printf "\377\377\377\377\377\377\377\377" | dd of="$obj" bs=1 seek=5000000 conv=notrunc 2>/dev/null &&
	on C git model clone -v --p2p hf:org/tiny c4 2>err &&
	cmp m1/model.safetensors "$(models C)/c4/model.safetensors" &&
	on C git model fsck c4 &&
	test_grep "P2P: " err
'

test_expect_success 'a killed download resumes from what it had' '
	stop_seeders &&
	start_hub_server &&
	on C git model clone -q --include tokenizer.json hf:org/tiny slow &&
	stop_hub_server &&
	start_seeder A --upload-limit 4m src &&
	dir="$(models C)/slow" &&
	# exec: $! is git-model itself
	{ (cd "$dir" && exec env HOME="$TRASH_DIRECTORY/C" XDG_CONFIG_HOME="$TRASH_DIRECTORY/C/.config" \
		XDG_CACHE_HOME="$TRASH_DIRECTORY/C/.cache" git-model lfs-fetch --p2p) >/dev/null 2>&1 5>&- & } &&
	pid=$! &&
	i=0 &&
	while [ $(du -sk "$dir/.git/lfs/tmp" 2>/dev/null | cut -f1 || echo 0) -lt 2048 ]
	do
		i=$((i + 1)) && [ $i -lt 300 ] || { kill $pid; false; } || return 1
		sleep 0.1
	done &&
	kill -9 $pid &&
	wait $pid 2>/dev/null
	test_path_is_missing "$dir/.git/lfs/objects/$(git -C "$dir" cat-file blob HEAD:model.safetensors |
		sed -n "s/^oid sha256:\(..\)\(..\).*/\1\/\2/p")" &&
	(cd "$dir" && on C git model lfs-fetch -v --p2p --checkout) 2>err &&
	test_grep "P2P: 1 of 1 objects from the swarm ([0-9]* bytes from peers, [0-9]* from web seeds, [1-9][0-9]* resumed" err &&
	cmp m1/model.safetensors "$dir/model.safetensors"
'

test_expect_success 'with no peer at all, the web seed (the Hub) delivers' '
	stop_seeders &&
	start_hub_server &&
	on C git model clone -v --p2p hf:org/tiny webonly 2>err &&
	test_grep "P2P: 2 of 2 objects from the swarm (0 bytes from peers, [1-9][0-9]* from web seeds" err &&
	test_grep "GET /_lfs/org/tiny/[0-9a-f]* 206 range=bytes=[0-9]*-[0-9]* " "$HUB_LOG" &&
	! test_grep "POST /org/tiny.git/info/lfs/objects/batch" "$HUB_LOG" &&
	cmp m1/model.safetensors "$(models C)/webonly/model.safetensors" &&
	on C git model fsck webonly
'

test_expect_success 'the torrent note round-trips through push and fetch, with stock git too' '
	start_hub_server &&
	git clone -q "$HUB_URL/org/tiny.git" stock &&
	git -C stock fetch -q origin refs/notes/torrents:refs/notes/torrents &&
	git -C stock notes --ref torrents show HEAD >actual &&
	git -C "$SRC" notes --ref torrents show HEAD >expect &&
	test_cmp expect actual &&
	test_grep "^git-model torrent v1\$" actual &&
	# a new revision: its note goes with git model push, B fetches it
	git model synth -q --seed 2 tiny m2 &&
	cp m2/model.safetensors "$SRC/model.safetensors" &&
	git -C "$SRC" commit -q -a -m "new weights" &&
	on A git model seed --create-only src >/dev/null &&
	git -C "$SRC" remote add hub "$HUB_ROOT/org/tiny.git" &&
	on A git model push -q src hub &&
	git -C "$SRC" notes --ref torrents show HEAD >expect &&
	on B git -C "$(models B)/tiny" remote set-url origin "$HUB_URL/org/tiny" &&
	on B git model fetch -q tiny &&
	git -C "$(models B)/tiny" notes --ref torrents show origin/main >actual &&
	test_cmp expect actual &&
	git -C "$(models B)/tiny" notes --ref torrents show HEAD~0 >old &&
	git -C stock notes --ref torrents show HEAD >expect-old &&
	test_cmp expect-old old &&
	git -C stock fetch -q origin &&
	git -C stock fetch -q origin refs/notes/torrents:refs/notes/torrents &&
	git -C stock notes --ref torrents show origin/main >actual &&
	git -C "$SRC" notes --ref torrents show HEAD >expect &&
	test_cmp expect actual
'

test_expect_success 'seed --daemon runs in the background; --status shows it, --stop ends it' '
	on A git model seed --daemon --port 0 src >out &&
	test_grep "^seeding 1 revision on port [1-9][0-9]* in the background (pid [0-9]*)" out &&
	pid=$(sed -n "s/.*(pid \([0-9]*\)).*/\1/p" out) &&
	i=0 &&
	until on A git model seed --status >status && test_grep "^src@[0-9a-f]\{12\} [0-9a-f]\{64\} seeding have=" status
	do
		i=$((i + 1)) && [ $i -lt 50 ] || { kill $pid; false; } || return 1
		sleep 0.1
	done &&
	test_grep "^pid $pid port [1-9]" status &&
	on A git model seed --stop >out &&
	test_grep "^stopped the seeder $pid" out &&
	i=0 &&
	while kill -0 $pid 2>/dev/null
	do
		i=$((i + 1)) && [ $i -lt 100 ] || return 1
		sleep 0.1
	done &&
	on A git model seed --status >status &&
	echo "no seeder is running" >expect &&
	test_cmp expect status
'

test_expect_success 'bad rates and a model without its objects are refused' '
	test_expect_code 129 on A git model seed --upload-limit fast src 2>err &&
	test_grep "bad rate .fast." err &&
	on C git model clone -q --include tokenizer.json "$HUB_ROOT/org/tiny.git" part &&
	test_expect_code 1 on C git model seed part 2>err &&
	test_grep "model.safetensors: part@[0-9a-f]\{12\} is not all in the store: fetch it first" err
'

test_expect_success 'cleanup: the seeders and the tracker stop' '
	stop_seeders &&
	kill $(cat tracker.pid) &&
	wait $(cat tracker.pid) 2>/dev/null
	test_path_is_missing seeders.pids
'

test_done
