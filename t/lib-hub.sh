# lib-hub.sh - start and stop the test hub server (t/lib/hub-server.py).
#
#	. "$GM_SRC_DIR/t/lib-hub.sh"
#	test_expect_success PYTHON3 'clone through the hub' '
#		start_hub_server &&
#		...
#	'
#
# start_hub_server [--token TOKEN] starts a server on a free 127.0.0.1 port
# serving the bare repositories under "$HUB_ROOT" (ORG/NAME.git) and stops
# it when the current test ends (test_when_finished).  It sets HUB_PORT,
# HUB_URL and HF_ENDPOINT (exported).  Requests are logged to "$HUB_LOG"; the
# faults file "$HUB_FAULTS" (JSON, see hub-server.py) is re-read on every
# request: write it to inject failures, remove it to stop.

HUB_ROOT="$TRASH_DIRECTORY/hub"
HUB_LOG="$TRASH_DIRECTORY/hub.log"
HUB_FAULTS="$TRASH_DIRECTORY/hub-faults.json"

start_hub_server () {
	mkdir -p "$HUB_ROOT" &&
	rm -f "$TRASH_DIRECTORY/hub.port" "$HUB_FAULTS" &&
	: >"$HUB_LOG" || return 1
	# A simple command of its own, so that $! is the server itself (in an
	# "a && b &" list it would be a subshell, and killing that would leave
	# the server running).  fd 5 is the TAP stream: the server must not
	# hold it open.
	python3 "$GM_SRC_DIR/t/lib/hub-server.py" --root "$HUB_ROOT" \
		--port-file "$TRASH_DIRECTORY/hub.port" --log "$HUB_LOG" \
		--faults "$HUB_FAULTS" "$@" \
		>"$TRASH_DIRECTORY/hub.out" 2>&1 5>&- </dev/null &
	echo $! >"$TRASH_DIRECTORY/hub.pid" &&
	test_when_finished stop_hub_server &&
	gm_hub_i=0 &&
	while ! [ -f "$TRASH_DIRECTORY/hub.port" ]; do
		gm_hub_i=$((gm_hub_i + 1))
		if [ $gm_hub_i -gt 100 ] || ! kill -0 "$(cat "$TRASH_DIRECTORY/hub.pid")" 2>/dev/null; then
			echo "the hub server did not start:"
			cat "$TRASH_DIRECTORY/hub.out"
			return 1
		fi
		sleep 0.1
	done &&
	HUB_PORT=$(cat "$TRASH_DIRECTORY/hub.port") &&
	HUB_URL="http://127.0.0.1:$HUB_PORT" &&
	HF_ENDPOINT=$HUB_URL &&
	export HUB_PORT HUB_URL HF_ENDPOINT
}

stop_hub_server () {
	if [ -f "$TRASH_DIRECTORY/hub.pid" ]; then
		gm_hub_pid=$(cat "$TRASH_DIRECTORY/hub.pid")
		kill "$gm_hub_pid" 2>/dev/null
		# Wait for it, so that the trash directory can be removed.
		wait "$gm_hub_pid" 2>/dev/null
		rm -f "$TRASH_DIRECTORY/hub.pid" "$TRASH_DIRECTORY/hub.port"
	fi
	unset HF_ENDPOINT
	return 0
}

# hub_repo ORG/NAME: an empty bare repository on the server (branch main).
hub_repo () {
	rm -rf "$HUB_ROOT/$1.git" &&
	mkdir -p "$HUB_ROOT/$1.git" &&
	git init -q --bare -b main "$HUB_ROOT/$1.git"
}

# hub_object ORG/NAME OID: the server's copy of an LFS object.
hub_object () {
	echo "$HUB_ROOT/$1.git/lfs/objects/$(echo $2 | cut -c1-2)/$(echo $2 | cut -c3-4)/$2"
}

# lfs_oid REV:PATH: the oid in the pointer stored at PATH.
lfs_oid () {
	git cat-file blob "$1" | sed -n "s/^oid sha256://p"
}
