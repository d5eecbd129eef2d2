#!/bin/sh
test_description='git model bundle and git model clone FILE.tar: round trip, and damaged bundles refused'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

MODELS="$HOME/.local/share/git-model/models"

# retar IN OUT ACTION: rewrite a bundle with python's tarfile; ACTION is
# flip-lfs (one byte of the first LFS object), flip-pack, drop-lfs, extra.
retar () {
	python3 - "$@" <<-\PY
	import io, sys, tarfile
	src, dst, action = sys.argv[1:4]
	members = []
	with tarfile.open(src) as t:
	    for m in t.getmembers():
	        members.append((m, t.extractfile(m).read()))
	done = False
	with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as t:
	    for m, data in members:
	        if not done and action == "flip-lfs" and m.name.startswith("lfs/"):
	            data = data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]
	            done = True
	        elif not done and action == "flip-pack" and m.name == "pack.pack":
	            data = data[:20] + bytes([data[20] ^ 1]) + data[21:]
	            done = True
	        elif not done and action == "drop-lfs" and m.name.startswith("lfs/"):
	            done = True
	            continue
	        t.addfile(m, io.BytesIO(data))
	        if action == "extra" and not done:
	            x = tarfile.TarInfo("evil.sh")
	            x.size = 3
	            t.addfile(x, io.BytesIO(b"hi\n"))
	            done = True
	PY
}

test_expect_success 'setup: a model with two commits, a tag and a branch' '
	git model synth -q tiny m1 &&
	git model synth -q --seed 2 tiny m2 &&
	git model import -q m1 src &&
	git -C "$MODELS/src" tag v1 &&
	cp m2/model.safetensors "$MODELS/src/model.safetensors" &&
	git -C "$MODELS/src" commit -q -a -m "new weights" &&
	git -C "$MODELS/src" branch side v1
'

test_expect_success PYTHON3 'bundle writes one tar: manifest, pack, LFS objects' '
	git model bundle src src.tar >out &&
	test_grep "^bundled .src. into src.tar (3 LFS objects)\$" out &&
	tar tf src.tar >members &&
	head -n 2 members >first &&
	printf "git-model-bundle.json\npack.pack\n" >expect &&
	test_cmp expect first &&
	test_line_count = 5 members &&
	tar xOf src.tar git-model-bundle.json >manifest.json &&
	python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))
print(m[\"format\"], m[\"version\"], m[\"head\"], \" \".join(sorted(m[\"refs\"])), len(m[\"lfs\"]))
" manifest.json >out &&
	echo "git-model-bundle 1 refs/heads/main refs/heads/main refs/heads/side refs/tags/v1 3" >expect &&
	test_cmp expect out
'

test_expect_success 'clone FILE.tar: the same history, refs and files, registered' '
	git model clone src.tar copy >out &&
	test_grep "^cloned src.tar as .copy." out &&
	git -C "$MODELS/src" for-each-ref --format="%(objectname) %(refname)" refs/heads refs/tags >expect &&
	git -C "$MODELS/copy" for-each-ref --format="%(objectname) %(refname)" refs/heads refs/tags >actual &&
	test_cmp expect actual &&
	echo main >expect &&
	git -C "$MODELS/copy" symbolic-ref --short HEAD >actual &&
	test_cmp expect actual &&
	cmp m2/model.safetensors "$MODELS/copy/model.safetensors" &&
	git -C "$MODELS/copy" status --porcelain >st &&
	test_must_be_empty st &&
	git model fsck copy &&
	git -C "$MODELS/copy" fsck --strict 2>/dev/null &&
	git infer -m copy@v1 --prompt-ids 5,6 -n 0 --logits-out a.out &&
	git infer -m m1 --prompt-ids 5,6 -n 0 --logits-out b.out &&
	cmp a.out b.out &&
	git model list >list &&
	test_grep "^copy .* $PWD/src.tar\$" list
'

test_expect_success 'the default name is the file name without .tar' '
	cp src.tar other.tar &&
	git model clone -q other.tar &&
	git model list >list &&
	test_grep "^other .* $PWD/other.tar\$" list
'

for damage in flip-lfs flip-pack drop-lfs extra
do
	test_expect_success PYTHON3 "a damaged bundle ($damage) is refused and nothing is registered" '
		retar src.tar bad.tar $damage &&
		test_expect_code 1 git model clone -q bad.tar bad 2>err &&
		test_grep "^error: .*bundle" err &&
		test_path_is_missing "$MODELS/bad" &&
		test_path_is_missing "$MODELS/.bad.partial" &&
		git model list >list &&
		! test_grep "^bad " list
	'
done

test_expect_success PYTHON3 'the messages say what is wrong' '
	retar src.tar bad.tar flip-lfs &&
	test_expect_code 1 git model clone -q bad.tar bad 2>err &&
	test_grep "is corrupt: LFS object [0-9a-f]* .* has sha256" err &&
	retar src.tar bad.tar drop-lfs &&
	test_expect_code 1 git model clone -q bad.tar bad 2>err &&
	test_grep "incomplete" err &&
	echo "not a tar" >junk.tar &&
	test_expect_code 1 git model clone -q junk.tar junk 2>err &&
	test_grep "not a git-model bundle" err
'

test_expect_success 'bundle refuses an unknown model and writes nothing' '
	test_expect_code 1 git model bundle nosuch out.tar 2>err &&
	test_grep "no model named .nosuch." err &&
	test_path_is_missing out.tar
'

test_done
