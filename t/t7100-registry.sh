#!/bin/sh
test_description='git model registry: import, list, --json, rm, where things live, concurrent writers'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# fake_model DIR: the smallest directory import accepts (it does not load
# the model): a config.json and an LFS-tracked weights file.
fake_model () {
	mkdir -p "$1" &&
	echo '{"model_type": "fake"}' >"$1/config.json" &&
	printf 'weights of %s\n' "$1" >"$1/model.safetensors"
}

MODELS="$HOME/.local/share/git-model/models"
REGISTRY="$HOME/.local/share/git-model/registry.db"

test_expect_success PYTHON3 'an empty registry lists nothing' '
	git model list >out &&
	test_must_be_empty out &&
	git model list --json >out &&
	python3 -c "import json, sys; assert json.load(open(sys.argv[1])) == []" out &&
	test_path_is_file "$REGISTRY"
'

test_expect_success PYTHON3 'the registry is SQLite in WAL mode with a schema version' '
	python3 -c "
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute(\"PRAGMA journal_mode\").fetchone()[0])
print(db.execute(\"PRAGMA user_version\").fetchone()[0])
print(sorted(r[0] for r in db.execute(\"SELECT name FROM sqlite_master WHERE type = \x27table\x27\")))
" "$REGISTRY" >out &&
	cat >expect <<-\EOF &&
	wal
	1
	[\x27adapters\x27, \x27models\x27, \x27worktrees\x27]
	EOF
	sed "s/\\\\x27/'"'"'/g" expect >expect2 &&
	test_cmp expect2 out
'

test_expect_success 'import registers a model in the models directory' '
	fake_model src &&
	git model import src >out &&
	test_grep "^imported src as .src. at [0-9a-f]\{12\} in $MODELS/src\$" out &&
	test_path_is_dir "$MODELS/src/.git" &&
	git model list >out &&
	test_line_count = 1 out &&
	rev=$(git -C "$MODELS/src" rev-parse HEAD) &&
	printf "%-24s %-12.12s" src $rev >expect &&
	cut -c1-37 out >actual &&
	printf "%s" "$(cat actual)" >actual2 &&
	test_cmp expect actual2 &&
	test_grep " $MODELS/src  $PWD/src\$" out
'

test_expect_success PYTHON3 'list --json: name, path, revision, source, size' '
	git model list --json >out.json &&
	python3 -c "
import json, sys
v = json.load(open(sys.argv[1]))
assert len(v) == 1, v
m = v[0]
for k in (\"name\", \"path\", \"revision\", \"source\", \"size\"):
    assert k in m, k
print(m[\"name\"], m[\"path\"], m[\"revision\"], m[\"source\"], m[\"size\"] > 0, m[\"missing\"])
" out.json >out &&
	echo "src $MODELS/src $(git -C "$MODELS/src" rev-parse HEAD) $PWD/src True False" >expect &&
	test_cmp expect out
'

test_expect_success 'a second model with the same name is refused, nothing changes' '
	fake_model other/src &&
	test_expect_code 1 git model import other/src 2>err &&
	test_grep "^error: a model named .src. is already registered" err &&
	git model list >out &&
	test_line_count = 1 out &&
	test_path_is_missing "$MODELS/.src.partial"
'

test_expect_success 'a NAME with a slash is a path; bad names are refused' '
	git model import other/src elsewhere/mine >out &&
	test_path_is_dir elsewhere/mine/.git &&
	git model list --json >out.json &&
	test_grep "\"path\": \"$PWD/elsewhere/mine\"" out.json &&
	test_expect_code 1 git model import other/src "bad name" 2>err &&
	test_grep "invalid model name" err &&
	test_expect_code 1 git model import other/src .hidden 2>err &&
	test_grep "invalid model name" err
'

test_expect_success 'import refuses what is not a model directory' '
	mkdir notamodel &&
	test_expect_code 1 git model import notamodel 2>err &&
	test_grep "has no config.json" err &&
	test_expect_code 1 git model import does-not-exist 2>err &&
	test_grep "does-not-exist is not a directory" err
'

test_expect_success 'GIT_MODEL_REGISTRY and GIT_MODEL_HOME move the registry and the models' '
	GIT_MODEL_REGISTRY=$PWD/alt.db GIT_MODEL_HOME=$PWD/alt-models git model import src alt >out &&
	test_path_is_file alt.db &&
	test_path_is_dir alt-models/alt/.git &&
	GIT_MODEL_REGISTRY=$PWD/alt.db git model list >out &&
	test_line_count = 1 out &&
	test_grep "^alt " out &&
	git model list >out &&
	! test_grep "^alt " out
'

test_expect_success 'XDG_DATA_HOME is honoured' '
	XDG_DATA_HOME=$PWD/xdg git model import src x >out &&
	test_path_is_file xdg/git-model/registry.db &&
	test_path_is_dir xdg/git-model/models/x/.git
'

test_expect_success PYTHON3 'a newer schema is refused, not misread' '
	cp alt.db newer.db &&
	python3 -c "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute(\"PRAGMA user_version = 99\"); db.commit()" newer.db &&
	test_expect_code 1 env GIT_MODEL_REGISTRY="$PWD/newer.db" git model list 2>err &&
	test_grep "schema version 99, newer than this git-model knows" err
'

test_expect_success 'rm without a terminal needs --yes' '
	test_expect_code 1 git model rm src </dev/null 2>err &&
	test_grep "use --yes" err &&
	test_path_is_dir "$MODELS/src"
'

# rm_on_tty NAME ANSWER: git model rm NAME with a terminal on standard
# input that has ANSWER typed into it.
rm_on_tty () {
	python3 - "$1" "$2" <<-\PY
	import os, subprocess, sys
	master, slave = os.openpty()
	os.write(master, (sys.argv[2] + "\n").encode())
	p = subprocess.run(["git", "model", "rm", sys.argv[1]], stdin=slave,
	                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
	sys.stdout.write(p.stdout.decode())
	sys.stderr.write(p.stderr.decode())
	sys.exit(p.returncode)
	PY
}

test_expect_success PYTHON3 'rm on a terminal asks; anything but y keeps the model' '
	test_expect_code 1 rm_on_tty src n >out 2>err &&
	test_grep "^Remove model .src. and delete $MODELS/src (.*)? \[y/N\] not removed\$" err &&
	test_path_is_dir "$MODELS/src" &&
	git model list >out &&
	test_grep "^src " out
'

test_expect_success PYTHON3 'rm on a terminal: y removes it' '
	git model import -q src src-copy &&
	rm_on_tty src-copy y >out 2>err &&
	test_grep "^removed .src-copy.\$" out &&
	test_path_is_missing "$MODELS/src-copy" &&
	git model list >out &&
	! test_grep "^src-copy " out
'

test_expect_success 'rm --yes removes the directory and the entry' '
	git model rm --yes src >out &&
	echo "removed ${SQ}src${SQ}" | sed "s/\${SQ}/'"'"'/g" >expect &&
	test_path_is_missing "$MODELS/src" &&
	git model list >out &&
	! test_grep "^src " out &&
	test_expect_code 1 git model rm --yes src 2>err &&
	test_grep "no model named .src." err
'

test_expect_success 'a model whose directory vanished is listed as missing and can be removed' '
	rm -rf elsewhere/mine &&
	git model list >out &&
	test_grep "^mine .* (missing)" out &&
	test_expect_code 1 git infer -m mine --check 2>err &&
	test_grep "does not exist any more" err &&
	git model rm --yes mine &&
	git model list >out &&
	! test_grep "^mine " out
'

test_expect_success PYTHON3 'concurrent imports of different names all succeed' '
	for i in 1 2 3 4 5 6 7 8
	do
		fake_model c$i || return 1
	done &&
	for i in 1 2 3 4 5 6 7 8
	do
		{ git model import -q c$i >out$i 2>err$i & }
	done &&
	wait &&
	for i in 1 2 3 4 5 6 7 8
	do
		test_must_be_empty err$i || return 1
	done &&
	git model list --json >out.json &&
	python3 -c "
import json, sys
names = sorted(m[\"name\"] for m in json.load(open(sys.argv[1])))
print(\" \".join(n for n in names if n.startswith(\"c\")))
" out.json >out &&
	echo "c1 c2 c3 c4 c5 c6 c7 c8" >expect &&
	test_cmp expect out &&
	python3 -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(\"PRAGMA integrity_check\").fetchone()[0])" "$REGISTRY" >out &&
	echo ok >expect &&
	test_cmp expect out
'

test_expect_success PYTHON3 'eight commands creating one new registry at once' '
	for i in 1 2 3 4 5 6 7 8
	do
		{ GIT_MODEL_REGISTRY="$PWD/fresh.db" git model list >fresh-out$i 2>fresh-err$i & }
	done &&
	wait &&
	cat fresh-err* >errs &&
	test_must_be_empty errs &&
	python3 -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(\"PRAGMA user_version\").fetchone()[0])" fresh.db >out &&
	echo 1 >expect &&
	test_cmp expect out
'

test_expect_success 'concurrent imports of one name: one wins, the other fails cleanly' '
	fake_model same &&
	{ ( git model import -q same dup >o1 2>e1; echo $? >s1 ) & } &&
	{ ( git model import -q same dup >o2 2>e2; echo $? >s2 ) & } &&
	wait &&
	cat s1 s2 | sort >statuses &&
	printf "0\n1\n" >expect &&
	test_cmp expect statuses &&
	cat e1 e2 >errs &&
	test_line_count = 1 errs &&
	test_grep "^error: .*dup" errs &&
	git model list >out &&
	test_grep "^dup " out &&
	test_path_is_missing "$MODELS/.dup.partial" &&
	git -C "$MODELS/dup" status --porcelain >st &&
	test_must_be_empty st
'

test_expect_success 'two clones at once of one source' '
	git model import -q c1 origin1 &&
	{ git model clone -q "$MODELS/origin1" k1 & } &&
	{ git model clone -q "$MODELS/origin1" k2 & } &&
	wait &&
	git model list >out &&
	test_grep "^k1 " out &&
	test_grep "^k2 " out &&
	cmp "$MODELS/k1/model.safetensors" c1/model.safetensors &&
	cmp "$MODELS/k2/model.safetensors" c1/model.safetensors
'

test_done
