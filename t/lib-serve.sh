# lib-serve.sh - start and stop git infer --serve for the t6xxx tests.
#
#	. "$GM_SRC_DIR/t/lib-serve.sh"
#
# The servers run as git-infer itself (not through git), so that the test
# has their process id for signals and memory readings.  Their output goes
# to files, and descriptor 5 (TAP) is closed for them, so that a server
# left behind cannot hold the test's output open.

# start_server NAME ARGS...: a server on a free port of 127.0.0.1; NAME.pid, NAME.url, NAME.log
start_server () {
	gm_name=$1
	shift
	# the last server's log must not be read before this one truncates it
	rm -f "$gm_name.log" "$gm_name.url"
	git-infer "$@" --serve 127.0.0.1:0 </dev/null >"$gm_name.out" 2>"$gm_name.log" 5>&- &
	echo $! >"$gm_name.pid"
	gm_i=0
	until grep -q "^git infer: serving" "$gm_name.log" 2>/dev/null
	do
		if ! kill -0 "$(cat "$gm_name.pid")" 2>/dev/null || [ $gm_i -ge 300 ]
		then
			cat "$gm_name.log"
			return 1
		fi
		gm_i=$((gm_i + 1))
		sleep 0.05
	done
	sed -n 's|^git infer: listening on \(http://[0-9.]*:[0-9]*\) .*|\1|p' "$gm_name.log" >"$gm_name.url" &&
	test -s "$gm_name.url"
}

# stop_server NAME: SIGTERM, and the server's exit status must be 0 within 15 s.
stop_server () {
	gm_pid=$(cat "$1.pid") &&
	kill -TERM "$gm_pid" &&
	gm_i=0 &&
	while kill -0 "$gm_pid" 2>/dev/null
	do
		[ $gm_i -lt 300 ] || return 1
		gm_i=$((gm_i + 1))
		sleep 0.05
	done &&
	wait "$gm_pid" &&
	rm -f "$1.pid"
}

# pocket_lora DIR SEED: a random PEFT LoRA for contrib/models/pocket-qwen3 (r 4,
# q_proj and v_proj of its 6 layers), with python3 alone.
pocket_lora () {
	python3 - "$1" "$2" <<-\PY
	import json, os, random, struct, sys
	d, seed = sys.argv[1], int(sys.argv[2])
	rnd = random.Random(seed)
	os.makedirs(d)
	json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
	           "task_type": "CAUSAL_LM", "base_model_name_or_path": "pocket-qwen3"},
	          open(d + "/adapter_config.json", "w"))
	h, off, data = {}, 0, b""
	for l in range(6):
	    for proj, out in (("q_proj", 256), ("v_proj", 128)):
	        pre = "base_model.model.model.layers.%d.self_attn.%s." % (l, proj)
	        for name, shape in ((pre + "lora_A.weight", [4, 256]), (pre + "lora_B.weight", [out, 4])):
	            n = shape[0] * shape[1]
	            h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
	            data += struct.pack("<%df" % n, *[rnd.gauss(0, 0.3) for _ in range(n)])
	            off += 4 * n
	hb = json.dumps(h).encode()
	hb += b" " * (-len(hb) % 8)
	open(d + "/adapter_model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + data)
	PY
}

# Servers a failed test left running are stopped before the script ends.
stop_leftovers () {
	for gm_p in "$TRASH_DIRECTORY"/*.pid
	do
		[ -f "$gm_p" ] && kill -KILL "$(cat "$gm_p")" 2>/dev/null
	done
	return 0
}
trap 'stop_leftovers; gm_exit_trap' EXIT
