#!/bin/sh
test_description='git model import; git infer -m NAME and NAME@REV; stock git and git-lfs on our repos; fsck and gc'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

MODELS="$HOME/.local/share/git-model/models"
R="$MODELS/tiny"

# run MODEL: greedy ids and the prompt's logits (random tiny models often
# agree on the ids; the logits tell the weights apart)
run () {
	git infer -m "$1" --prompt-ids 9,8,7 -n 4 --temperature 0 --print-ids --logits-out logits.out &&
	sha256sum <logits.out
}

test_expect_success 'setup: two synthetic models' '
	git model synth -q tiny m1 &&
	git model synth -q --seed 2 tiny m2
'

test_expect_success 'import makes a registered repository with LFS-tracked weights' '
	git model import m1 tiny >out &&
	test_grep "^imported m1 as .tiny." out &&
	test_path_is_file "$R/model.safetensors" &&
	cmp m1/model.safetensors "$R/model.safetensors" &&
	cmp m1/tokenizer.json "$R/tokenizer.json" &&
	test_grep "^\*\.safetensors filter=lfs diff=lfs merge=lfs -text\$" "$R/.gitattributes" &&
	test_grep "^\*\.gguf filter=lfs" "$R/.gitattributes" &&
	test_grep "^tokenizer.json filter=lfs" "$R/.gitattributes" &&
	git -C "$R" cat-file blob HEAD:model.safetensors >ptr &&
	test_grep "^version https://git-lfs.github.com/spec/v1\$" ptr &&
	oid=$(sed -n "s/^oid sha256://p" ptr) &&
	test_path_is_file "$R/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid" &&
	git -C "$R" cat-file blob HEAD:config.json >cfg &&
	test_cmp m1/config.json cfg &&
	git -C "$R" status --porcelain >st &&
	test_must_be_empty st &&
	git -C "$R" log --format=%s >log &&
	echo "Import tiny" >expect &&
	test_cmp expect log
'

test_expect_success 'the source directory is left as it was' '
	test_path_is_missing m1/.git &&
	test_path_is_missing m1/.gitattributes
'

test_expect_success 'git infer -m NAME gives what -m DIR gives' '
	run m1 >expect &&
	run tiny >actual &&
	test_cmp expect actual &&
	git infer -m tiny --check >out &&
	test_grep "^ok" out
'

test_expect_success GIT_LFS 'pointers are byte-identical to what git-lfs writes' '
	git lfs pointer --file=m1/model.safetensors >lfs-ptr 2>/dev/null &&
	test_cmp lfs-ptr ptr
'

test_expect_success GIT_LFS 'git lfs fsck and git fsck pass on the imported repository' '
	(cd "$R" && git lfs fsck && git fsck --strict)
'

test_expect_success GIT_LFS 'stock git with git-lfs clones it' '
	git lfs install --skip-repo >/dev/null &&
	git clone -q "$R" stock &&
	cmp m1/model.safetensors stock/model.safetensors &&
	cmp m1/tokenizer.json stock/tokenizer.json &&
	(cd stock && git lfs ls-files >../ls) &&
	test_grep "model.safetensors" ls
'

test_expect_success GIT_LFS 'a repository written by git-lfs is cloned and run by name' '
	git init -q -b main bylfs &&
	cp m1/* bylfs/ &&
	(
		cd bylfs &&
		git lfs install --local >/dev/null &&
		git lfs track "*.safetensors" "tokenizer.json" >/dev/null &&
		git add . &&
		git commit -q -m "written by git-lfs"
	) &&
	git model clone -q bylfs fromlfs &&
	cmp m1/model.safetensors "$MODELS/fromlfs/model.safetensors" &&
	git -C "$MODELS/fromlfs" status --porcelain >st &&
	test_must_be_empty st &&
	run fromlfs >actual &&
	run m1 >expect &&
	test_cmp expect actual &&
	git model fsck fromlfs
'

test_expect_success 'a second commit with stock git goes through our clean filter' '
	cp m2/model.safetensors "$R/model.safetensors" &&
	git -C "$R" add model.safetensors &&
	git -C "$R" commit -q -m "new weights" &&
	git -C "$R" cat-file blob HEAD:model.safetensors >ptr2 &&
	test_grep "^oid sha256:" ptr2 &&
	! test_cmp ptr ptr2 >/dev/null
'

test_expect_success 'git infer -m NAME runs the new weights, NAME@REV the old ones' '
	run m2 >expect2 &&
	run tiny >actual &&
	test_cmp expect2 actual &&
	run m1 >expect1 &&
	run tiny@HEAD~1 >actual &&
	test_cmp expect1 actual &&
	run "tiny@$(git -C "$R" rev-parse HEAD~1)" >actual &&
	test_cmp expect1 actual &&
	! test_cmp expect1 expect2 >/dev/null
'

test_expect_success 'NAME@REV maps the weights from the object store, no checkout' '
	old=$(git -C "$R" rev-parse HEAD~1) &&
	view="$R/.git/git-model/views/$old" &&
	test -L "$view/model.safetensors" &&
	case "$(readlink "$view/model.safetensors")" in
	"$R/.git/lfs/objects/"*) ;;
	*) false ;;
	esac &&
	cmp m2/model.safetensors "$R/model.safetensors"
'

test_expect_success PYTHON3 'git model info NAME and NAME@REV' '
	git model info tiny >out &&
	test_grep "^name: *tiny\$" out &&
	test_grep "^revision: *$(git -C "$R" rev-parse HEAD)\$" out &&
	test_grep "^source: *$PWD/m1\$" out &&
	test_grep "^path: *$R\$" out &&
	test_grep "^architecture: *Qwen3ForCausalLM" out &&
	test_grep "^adapters: none" out &&
	git model info tiny@HEAD~1 >out &&
	test_grep "^revision: *$(git -C "$R" rev-parse HEAD~1)\$" out &&
	git model info --json tiny >out.json &&
	python3 -c "
import json, sys
o = json.load(open(sys.argv[1]))
print(o[\"name\"], o[\"architecture\"], o[\"adapters\"], o[\"worktrees\"])
" out.json >out &&
	echo "tiny Qwen3ForCausalLM [] []" >expect &&
	test_cmp expect out
'

test_expect_success 'info lists adapters under adapters/NN_NAME' '
	mkdir -p "$R/adapters/01_chat" &&
	echo "{}" >"$R/adapters/01_chat/adapter_config.json" &&
	git model info tiny >out &&
	test_grep "^    adapters/01_chat\$" out &&
	rm -r "$R/adapters"
'

test_expect_success 'unknown names and revisions are clear errors' '
	test_expect_code 1 git infer -m nosuch --check 2>err &&
	test_grep "neither a model directory nor a registered model" err &&
	test_expect_code 1 git infer -m tiny@nosuchrev --check 2>err &&
	test_grep "unknown revision .nosuchrev." err &&
	test_expect_code 1 git infer -m tiny@ --check 2>err &&
	test_grep "a revision is expected" err
'

test_expect_success 'fsck: a clean store passes' '
	git model fsck tiny >out &&
	echo "checked 3 LFS objects, 0 problems" >expect &&
	test_cmp expect out
'

test_expect_success 'fsck: a corrupted object is reported, exit 1' '
	oid=$(sed -n "s/^oid sha256://p" ptr2) &&
	obj="$R/.git/lfs/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-4)/$oid" &&
	cp "$obj" saved &&
	chmod u+w "$obj" &&
	printf "X" | dd of="$obj" bs=1 seek=100 conv=notrunc 2>/dev/null &&
	test_expect_code 1 git model fsck tiny >out 2>err &&
	test_grep "^corrupt: $oid model.safetensors" out &&
	test_grep "^error: 1 LFS object is missing or corrupt" err &&
	rm -f "$obj" &&
	test_expect_code 1 git model fsck tiny >out 2>err &&
	test_grep "^missing: $oid model.safetensors" out &&
	test_expect_code 1 git infer -m tiny@HEAD --check 2>err &&
	test_grep "git model fetch" err &&
	mkdir -p "$(dirname "$obj")" &&
	cp saved "$obj" &&
	git model fsck tiny
'

test_expect_success 'gc keeps what refs use and frees what they do not' '
	git model gc tiny >out &&
	echo "removed 0 unreferenced LFS objects, freed 0 bytes (0 bytes)" >expect &&
	test_cmp expect out &&
	git model synth -q --seed 3 tiny m3 &&
	git -C "$R" checkout -q -b experiment &&
	cp m3/model.safetensors "$R/model.safetensors" &&
	git -C "$R" commit -q -a -m experiment &&
	git -C "$R" checkout -q main &&
	git -C "$R" branch -D experiment >/dev/null &&
	size=$(test_file_size m3/model.safetensors) &&
	git model gc --dry-run tiny >out &&
	test_grep "^would remove 1 unreferenced LFS object, freeing .* ($size bytes)\$" out &&
	git model gc tiny >out &&
	test_grep "^removed 1 unreferenced LFS object, freed .* ($size bytes)\$" out &&
	git model fsck tiny &&
	run tiny >actual &&
	test_cmp expect2 actual &&
	run tiny@HEAD~1 >actual &&
	test_cmp expect1 actual
'

test_done
