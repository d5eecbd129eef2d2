#!/bin/sh
test_description='git adapter list/add/rm/rename/export/merge: the adapters of a model directory'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
A1="$TEST_FIXTURES/lora/tiny-qwen3-f32-a1-r8-all"
A2="$TEST_FIXTURES/lora/tiny-qwen3-f32-a2-r4-qv"
A3="$TEST_FIXTURES/lora/tiny-qwen3-f32-a3-r6-rslora-mlp"
POCKET="$GM_SRC_DIR/contrib/models/pocket-qwen3"
LORA_PY="$GM_SRC_DIR/t/lib-lora.py"
IDS=1,17,42,99,3,250,7

test_expect_success 'setup: a model directory' '
	cp -R "$F32" model &&
	sha256sum model/model.safetensors >base.sum
'

test_expect_success 'add copies a checked adapter to adapters/NN_NAME' '
	git adapter add --no-commit -m model --name first "$A1" >out &&
	echo "added adapters/00_first" >expect &&
	test_cmp expect out &&
	cmp "$A1/adapter_config.json" model/adapters/00_first/adapter_config.json &&
	cmp "$A1/adapter_model.safetensors" model/adapters/00_first/adapter_model.safetensors &&
	test_grep "\"kind\": *\"imported\"" model/adapters/00_first/git-model.json &&
	test_grep "\"source\": *\".*tiny-qwen3-f32-a1-r8-all\"" model/adapters/00_first/git-model.json
'

test_expect_success 'add names by the directory, the next index' '
	git adapter add --no-commit -m model "$A2" >out &&
	echo "added adapters/01_tiny-qwen3-f32-a2-r4-qv" >expect &&
	test_cmp expect out &&
	(cd model/adapters && git adapter add --no-commit --name third "$A3") >out &&
	echo "added adapters/02_third" >expect &&
	test_cmp expect out
'

test_expect_success 'add refuses an adapter of another model, and writes nothing' '
	cp -R "$POCKET" pocket &&
	test_expect_code 1 git adapter add --no-commit -m pocket --name a1 "$A1" 2>err &&
	test_grep "^error: cannot check\|^error: .*q_proj.*shape\|^error: .*\[" err &&
	test_path_is_missing pocket/adapters/00_a1 &&
	! ls pocket/adapters/.tmp-* 2>/dev/null
'

test_expect_success 'add refuses bad and taken names' '
	test_expect_code 1 git adapter add --no-commit -m model --name a/b "$A2" 2>err &&
	test_grep "may hold only letters, digits" err &&
	test_expect_code 1 git adapter add --no-commit -m model --name ../up "$A2" 2>err &&
	test_grep "must not start with" err &&
	test_expect_code 1 git adapter add --no-commit -m model --name .hidden "$A2" 2>err &&
	test_grep "must not start with" err &&
	test_expect_code 1 git adapter add --no-commit -m model --name first "$A2" 2>err &&
	test_grep "an adapter named .first. exists already (00_first)" err &&
	test_expect_code 1 git adapter add --no-commit -m model --name x nosuch 2>err &&
	test_grep "nosuch: not a directory" err &&
	test_expect_code 129 git adapter add -m model 2>err &&
	test_grep "missing <peft-dir>" err
'

test_expect_success 'list prints index, name, type, rank, alpha, targets, size, origin' '
	git adapter list model >out &&
	test_line_count = 4 out &&
	test_grep "^#  *NAME  *TYPE  *RANK  *ALPHA  *TARGETS  *SIZE  *BASE  *ORIGIN$" out &&
	test_grep "^00  *first  *lora  *8  *16  *q_proj,down_proj,o_proj,v_proj,gate_proj,k_proj,up_proj  *115 KiB  *-  *imported$" out &&
	test_grep "^01  *tiny-qwen3-f32-a2-r4-qv  *lora  *4  *4  *q_proj,v_proj  " out &&
	test_grep "^02  *third  *lora  *6  *12  " out &&
	(cd model && git adapter list) >out2 &&
	test_cmp out out2
'

test_expect_success PYTHON3 'list --json' '
	git adapter list --json model >out.json &&
	python3 - out.json <<-\PY
	import json, os, sys
	v = json.load(open(sys.argv[1]))
	assert [a["index"] for a in v] == [0, 1, 2], v
	a = v[0]
	assert a["name"] == "first" and a["path"] == "00_first" and a["type"] == "lora", a
	assert a["rank"] == 8 and a["alpha"] == 16 and a["size"] == os.path.getsize("model/adapters/00_first/adapter_model.safetensors"), a
	assert a["origin"] == "imported" and a["base_revision"] is None, a
	PY
'

test_expect_success 'show NAME, NN or NN_NAME of the model' '
	git adapter show -m model first >a &&
	git adapter show -m model 00 >b &&
	(cd model && git adapter show 00_first) >c &&
	test_cmp a b &&
	sed 1d a >a1 && sed 1d c >c1 &&
	test_cmp a1 c1 &&
	test_grep "^rank: *8$" a &&
	test_grep "^ *q_proj .*|sBA| 38.2-39.36$" a &&
	test_expect_code 1 git adapter show -m model nosuch 2>err &&
	test_grep "^error: unknown adapter .nosuch.: not a directory, nor an adapter in model/adapters (there: first, tiny-qwen3-f32-a2-r4-qv, third)$" err
'

test_expect_success 'git infer --adapter takes the names too' '
	git infer -m model --prompt-ids $IDS -n 0 --logits-out by-name.st --adapter first >out &&
	git infer -m model --prompt-ids $IDS -n 0 --logits-out by-dir.st --adapter "$A1" >out &&
	cmp by-name.st by-dir.st &&
	git infer -m model --prompt-ids $IDS -n 0 --logits-out by-index.st --adapter 00:1 >out &&
	cmp by-name.st by-index.st
'

test_expect_success 'rename keeps the index; rm removes' '
	git adapter rename --no-commit -m model tiny-qwen3-f32-a2-r4-qv qv >out &&
	echo "renamed adapters/01_tiny-qwen3-f32-a2-r4-qv to adapters/01_qv" >expect &&
	test_cmp expect out &&
	cmp "$A2/adapter_model.safetensors" model/adapters/01_qv/adapter_model.safetensors &&
	test_expect_code 1 git adapter rename --no-commit -m model qv third 2>err &&
	test_grep "an adapter named .third. exists already (02_third)" err &&
	git adapter rm --no-commit -m model third >out &&
	echo "removed adapters/02_third" >expect &&
	test_cmp expect out &&
	test_path_is_missing model/adapters/02_third &&
	test_expect_code 1 git adapter rm --no-commit -m model third 2>err &&
	test_grep "unknown adapter .third." err &&
	! ls -a model/adapters | grep "^\.rm-"
'

test_expect_success 'export writes a plain PEFT directory' '
	git adapter export -m model qv exported >out &&
	cmp "$A2/adapter_config.json" exported/adapter_config.json &&
	cmp "$A2/adapter_model.safetensors" exported/adapter_model.safetensors &&
	test_path_is_missing exported/git-model.json &&
	git adapter show exported >out &&
	test_grep "^rank: *4$" out &&
	mkdir full && touch full/x &&
	test_expect_code 1 git adapter export -m model qv full 2>err &&
	test_grep "exists and is not an empty directory" err &&
	mkdir empty &&
	git adapter export -m model qv empty &&
	cmp exported/adapter_model.safetensors empty/adapter_model.safetensors
'

test_expect_success PYTHON3 'merge -o folds a scaled stack into the weights' '
	git adapter merge -m model first "$A3" --scale 0.5 --scale 1.5 -o merged >out &&
	echo "wrote merged" >expect &&
	test_cmp expect out &&
	for f in config.json generation_config.json tokenizer.json tokenizer_config.json
	do
		cmp model/$f merged/$f || return 1
	done &&
	test_path_is_missing merged/adapters &&
	sha256sum -c base.sum &&
	git infer -m merged --prompt-ids $IDS -n 0 --logits-out merged.st >out &&
	git infer -m model --prompt-ids $IDS -n 0 --logits-out stack.st \
		--adapter first:0.5 --adapter "$A3:1.5" >out &&
	git infer -m model --prompt-ids $IDS -n 0 --logits-out base.st >out &&
	python3 "$LORA_PY" same merged.st stack.st 1e-5 &&
	! python3 "$LORA_PY" same merged.st base.st 1e-2
'

test_expect_success PYTHON3 'merge of a sparse adapter, and sparsify into the model' '
	git adapter sparsify --no-commit -m model --density 0.05 first >out &&
	test_grep "^wrote: *adapters/02_first-d0.05$" out &&
	test_grep "\"kind\": *\"sparsified\"" model/adapters/02_first-d0.05/git-model.json &&
	git adapter merge -m model first-d0.05 -o merged-sparse >out &&
	git infer -m merged-sparse --prompt-ids $IDS -n 0 --logits-out ms.st >out &&
	git infer -m model --prompt-ids $IDS -n 0 --logits-out ss.st --adapter first-d0.05 >out &&
	python3 "$LORA_PY" same ms.st ss.st 1e-5
'

test_expect_success 'merge refuses what it cannot do' '
	test_expect_code 129 git adapter merge -m model first 2>err &&
	test_grep "say where the merged weights go" err &&
	test_expect_code 129 git adapter merge -m model first qv --scale 1 -o x 2>err &&
	test_grep "1 --scale for 2 adapters" err &&
	test_expect_code 129 git adapter merge -m model first --scale abc -o x 2>err &&
	test_grep "expects a number" err &&
	test_expect_code 1 git adapter merge -m model first -o merged 2>err &&
	test_grep "merged exists already" err &&
	test_expect_code 1 git adapter merge -m model nosuch -o y 2>err &&
	test_grep "unknown adapter .nosuch." err &&
	test_path_is_missing y &&
	! ls -a | grep "^\.tmp-merge"
'

# ---------------------------------------------------------------- in a model repository

test_expect_success 'setup: an imported model repository' '
	git config --global user.name "A U Thor" &&
	git config --global user.email author@example.com &&
	git model import "$F32" tiny >out &&
	REPO=$(git model list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0][\"path\"])") &&
	echo "$REPO" >repo.path &&
	test_path_is_dir "$REPO/.git" &&
	git -C "$REPO" rev-parse HEAD >base.head
'

test_expect_success 'each change is a commit, weights in LFS' '
	REPO=$(cat repo.path) &&
	git adapter add -m tiny --name coding "$A1" >out &&
	test_grep "^added adapters/00_coding$" out &&
	test_grep "^committed [0-9a-f]\{12\}$" out &&
	git -C "$REPO" log -1 --format=%s >subject &&
	echo "adapter: add coding" >expect &&
	test_cmp expect subject &&
	git -C "$REPO" show HEAD:adapters/00_coding/adapter_model.safetensors >ptr &&
	test_grep "^version https://git-lfs.github.com/spec/v1$" ptr &&
	test_grep "^oid sha256:$(sha256sum "$A1/adapter_model.safetensors" | cut -c1-64)$" ptr &&
	git -C "$REPO" show HEAD:adapters/00_coding/adapter_config.json >cfg &&
	cmp "$A1/adapter_config.json" cfg &&
	test_grep "\"base_revision\": *\"$(cat base.head)\"" "$REPO/adapters/00_coding/git-model.json" &&
	git -C "$REPO" status --porcelain >status &&
	test_must_be_empty status
'

test_expect_success 'rename, rm and sparsify commit too; the history tells the story' '
	REPO=$(cat repo.path) &&
	git adapter add -m tiny --name qv "$A2" >out &&
	git adapter rename -m tiny qv attn >out &&
	(cd "$REPO" && git adapter sparsify --density 0.1 coding) >out &&
	git adapter rm -m tiny attn >out &&
	git -C "$REPO" log --format=%s >log &&
	cat >expect <<-\EOF &&
	adapter: remove attn
	adapter: add coding-d0.1, coding sparsified to density 0.1
	adapter: rename qv to attn
	adapter: add qv
	adapter: add coding
	EOF
	head -n 5 log >log5 &&
	test_cmp expect log5 &&
	git -C "$REPO" ls-tree -r --name-only HEAD adapters >tree &&
	cat >expect <<-\EOF &&
	adapters/00_coding/adapter_config.json
	adapters/00_coding/adapter_model.safetensors
	adapters/00_coding/git-model.json
	adapters/02_coding-d0.1/adapter_model.safetensors
	adapters/02_coding-d0.1/git-model.json
	adapters/02_coding-d0.1/sparse_config.json
	EOF
	test_cmp expect tree &&
	git -C "$REPO" status --porcelain >status &&
	test_must_be_empty status
'

test_expect_success GIT_LFS 'stock git and git-lfs agree with the history' '
	REPO=$(cat repo.path) &&
	git -C "$REPO" fsck 2>err &&
	git -C "$REPO" lfs fsck >out &&
	test_grep "Git LFS fsck OK" out &&
	git -C "$REPO" lfs ls-files --name-only >lfs &&
	test_grep "^adapters/00_coding/adapter_model.safetensors$" lfs
'

test_expect_success 'list shows the base revision and the origin' '
	git adapter list tiny >out &&
	test_grep "^00  *coding  *lora  *8  *16 .* $(cut -c1-12 base.head)  *imported$" out &&
	test_grep "^02  *coding-d0.1  *sparse  .* sparsified$" out
'

test_expect_success PYTHON3 'merge --into commits merged weights on a new branch' '
	REPO=$(cat repo.path) &&
	git -C "$REPO" rev-parse HEAD >head.before &&
	git adapter merge -m tiny coding --scale 0.5 --into merged/coding >out &&
	test_grep "^committed [0-9a-f]\{12\} on branch merged/coding$" out &&
	git -C "$REPO" rev-parse HEAD >head.after &&
	test_cmp head.before head.after &&
	git -C "$REPO" status --porcelain >status &&
	test_must_be_empty status &&
	git -C "$REPO" rev-parse merged/coding^ >parent &&
	test_cmp head.before parent &&
	git -C "$REPO" diff --name-only HEAD merged/coding >changed &&
	echo model.safetensors >expect &&
	test_cmp expect changed &&
	git -C "$REPO" log -1 --format=%s merged/coding >subject &&
	echo "adapter: merge coding into the base weights" >expect &&
	test_cmp expect subject &&
	git infer -m tiny@merged/coding --prompt-ids $IDS -n 0 --logits-out branch.st >out &&
	git infer -m tiny --prompt-ids $IDS -n 0 --logits-out unmerged.st --adapter coding:0.5 >out &&
	python3 "$LORA_PY" same branch.st unmerged.st 1e-5 &&
	git -C "$REPO" lfs fsck >out &&
	test_grep "Git LFS fsck OK" out
'

test_expect_success 'merge --into refuses a taken branch; changes refuse NAME@REV' '
	test_expect_code 1 git adapter merge -m tiny coding --into merged/coding 2>err &&
	test_grep "a branch named .merged/coding. exists already" err &&
	test_expect_code 1 git adapter merge -m tiny coding --into "bad..name" 2>err &&
	test_grep "not a valid branch name" err &&
	test_expect_code 1 git adapter add -m tiny@HEAD --name x "$A2" 2>err &&
	test_grep "is a past revision; adapters are changed in a work tree" err &&
	git adapter list tiny@merged/coding >out &&
	test_grep "^00  *coding " out
'

test_expect_success 'export from a past revision writes plain files, not links into the store' '
	git adapter export -m tiny@HEAD coding exported-rev >out &&
	test_path_is_file exported-rev/adapter_model.safetensors &&
	! test -L exported-rev/adapter_model.safetensors &&
	cmp "$A1/adapter_model.safetensors" exported-rev/adapter_model.safetensors
'

test_expect_success '--no-commit leaves the change for the user to commit' '
	REPO=$(cat repo.path) &&
	git adapter add -m tiny --no-commit --name late "$A2" >out &&
	test_grep ! "^committed" out &&
	git -C "$REPO" status --porcelain >status &&
	test_grep "adapters/03_late/" status
'

test_expect_success 'outside a model, -m is needed' '
	mkdir elsewhere &&
	(cd elsewhere && test_expect_code 1 git adapter list 2>../err) &&
	test_grep "not inside a model directory" err
'

test_done
