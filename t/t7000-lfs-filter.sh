#!/bin/sh
test_description='LFS filter: pointers identical to git-lfs, install, track, filter-process with stock git, interop'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# A repository of our own: git model install --local, *.bin tracked.
new_repo () {
	git init -q "$1" &&
	(cd "$1" && git model install --local -q && git model track "*.bin" >/dev/null)
}

# object_path REPO OID
object_path () {
	echo "$1/.git/lfs/objects/$(echo $2 | cut -c1-2)/$(echo $2 | cut -c3-4)/$2"
}

test_expect_success 'sample files of several sizes' '
	: >empty.bin &&
	printf x >one.bin &&
	printf "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 12\n" \
		0000000000000000000000000000000000000000000000000000000000000000 >looks-like-pointer.bin &&
	head -c 1023 /dev/urandom >k1023.bin &&
	head -c 1024 /dev/urandom >k1024.bin &&
	head -c 1025 /dev/urandom >k1025.bin &&
	head -c 3000000 /dev/urandom >m3.bin &&
	git init -q scratch
'

test_expect_success GIT_LFS 'git model clean prints the pointer git lfs pointer prints, for every size' '
	for f in empty one k1023 k1024 k1025 m3
	do
		(cd scratch && git model clean -- $f.bin <../$f.bin) >ours.$f &&
		git lfs pointer --file $f.bin >theirs.$f 2>/dev/null &&
		test_cmp theirs.$f ours.$f || return 1
	done &&
	test_must_be_empty ours.empty &&
	test_line_count = 3 ours.m3
'

test_expect_success 'clean stores the object where git-lfs keeps it; empty content stores nothing' '
	oid=$(sha256sum m3.bin | cut -d" " -f1) &&
	test_cmp m3.bin "$(object_path scratch $oid)" &&
	test_path_is_missing "$(object_path scratch $(sha256sum empty.bin | cut -d" " -f1))" &&
	ls scratch/.git/lfs/tmp >tmpfiles &&
	test_must_be_empty tmpfiles
'

test_expect_success 'content that already is a pointer is kept as it is and stores nothing' '
	find scratch/.git/lfs/objects -type f | sort >objects.before &&
	(cd scratch && git model clean -- p <../looks-like-pointer.bin) >out &&
	test_cmp looks-like-pointer.bin out &&
	find scratch/.git/lfs/objects -type f | sort >objects.after &&
	test_cmp objects.before objects.after &&
	test_path_is_missing "$(object_path scratch $(sha256sum looks-like-pointer.bin | cut -d" " -f1))"
'

test_expect_success 'smudge turns a pointer back into the content; other input passes through' '
	(cd scratch && git model clean -- m3.bin <../m3.bin >../m3.ptr &&
	 git model smudge -- m3.bin <../m3.ptr >../m3.out &&
	 git model smudge -- one.bin <../one.bin >../one.out) &&
	test_cmp m3.bin m3.out &&
	test_cmp one.bin one.out
'

test_expect_success 'smudge of a missing object that cannot be downloaded names it and says why' '
	(cd scratch && test_expect_code 1 git model smudge -- weights.bin <../looks-like-pointer.bin) 2>err &&
	test_grep "^error: weights.bin: LFS object 0000000000000000000000000000000000000000000000000000000000000000 (12 bytes) is not in .* and could not be downloaded: no remote .origin." err
'

test_expect_success 'smudge refuses a corrupt object in the store' '
	oid=$(sha256sum k1025.bin | cut -d" " -f1) &&
	(cd scratch && git model clean -- k <../k1025.bin >../k.ptr) &&
	obj=$(object_path scratch $oid) &&
	# a byte other than the one there (random content may hold an X already)
	byte=$(dd if="$obj" bs=1 skip=10 count=1 2>/dev/null | od -An -tu1 | tr -d " ") &&
	if test "$byte" = 88; then x=Y; else x=X; fi &&
	chmod u+w "$obj" && printf "$x" | dd of="$obj" bs=1 seek=10 conv=notrunc 2>/dev/null &&
	! cmp -s k1025.bin "$obj" &&
	(cd scratch && test_expect_code 1 git model smudge -- k <../k.ptr >/dev/null) 2>err &&
	test_grep "LFS object $oid is corrupt" err
'

test_expect_success GIT_LFS 'GIT_LFS_SKIP_SMUDGE leaves pointers alone' '
	(cd scratch && GIT_LFS_SKIP_SMUDGE=1 git model smudge -- m3.bin <../m3.ptr >../skip.out) &&
	test_cmp m3.ptr skip.out
'

test_expect_success 'install --local writes the filter configuration like git lfs install' '
	git init -q inst &&
	(cd inst && git model install --local >../out) &&
	echo "LFS filter installed (repository configuration): filter.lfs runs git-model" >expect &&
	test_cmp expect out &&
	git -C inst config --local --get-regexp "^filter\.lfs\." >actual &&
	cat >expect <<-\EOF &&
	filter.lfs.clean git-model clean -- %f
	filter.lfs.smudge git-model smudge -- %f
	filter.lfs.process git-model filter-process
	filter.lfs.required true
	EOF
	test_cmp expect actual &&
	(cd inst && git model install --local >../out) &&
	test_grep "already installed" out
'

test_expect_success GIT_LFS 'install refuses to replace a different filter.lfs configuration without --force' '
	git init -q other &&
	(cd other && git lfs install --local >/dev/null &&
	 test_expect_code 1 git model install --local 2>../err) &&
	test_grep "filter.lfs.clean is already set to .git-lfs clean -- %f." err &&
	test_grep "git model install --force" err &&
	test "$(git -C other config filter.lfs.process)" = "git-lfs filter-process" &&
	(cd other && git model install --local --force -q) &&
	test "$(git -C other config filter.lfs.process)" = "git-model filter-process"
'

test_expect_success 'install --global writes ~/.gitconfig; --local and --global together is a usage error' '
	git model install -q &&
	test "$(git config --global filter.lfs.process)" = "git-model filter-process" &&
	test "$(git config --global filter.lfs.required)" = true &&
	git config --global --remove-section filter.lfs &&
	test_expect_code 129 git model install --local --global 2>err &&
	test_grep "cannot be used together" err
'

test_expect_success 'track maintains .gitattributes: appended once, at the top of the worktree' '
	git init -q tr && mkdir tr/sub &&
	printf "*.txt text" >tr/.gitattributes &&
	(cd tr/sub && git model track "*.safetensors" "*.gguf" >../../out) &&
	cat >expect <<-\EOF &&
	*.txt text
	*.safetensors filter=lfs diff=lfs merge=lfs -text
	*.gguf filter=lfs diff=lfs merge=lfs -text
	EOF
	test_cmp expect tr/.gitattributes &&
	test_grep "2 lines added" out &&
	(cd tr && git model track "*.gguf" >../out) &&
	test_cmp expect tr/.gitattributes &&
	test_grep "already tracked" out &&
	test_expect_code 1 git -C tr model track "has space" 2>err &&
	test_grep "invalid pattern" err &&
	test_expect_code 129 git -C tr model track 2>err &&
	test_grep "missing <pattern>" err
'

test_expect_success GIT_LFS 'stock git add/commit through our filter-process: git-lfs layout, fsck clean' '
	new_repo ours &&
	cp m3.bin k1025.bin one.bin empty.bin ours/ &&
	echo readme >ours/README &&
	(cd ours && git add . && git commit -q -m "weights" &&
	 git lfs fsck && git fsck --strict) &&
	for f in m3 k1025 one
	do
		git -C ours cat-file blob HEAD:$f.bin >blob.$f &&
		git lfs pointer --file $f.bin >expect.$f 2>/dev/null &&
		test_cmp expect.$f blob.$f &&
		test_cmp $f.bin "$(object_path ours $(sha256sum $f.bin | cut -d" " -f1))" || return 1
	done &&
	git -C ours cat-file blob HEAD:empty.bin >blob.empty &&
	test_must_be_empty blob.empty
'

test_expect_success 'stock git checkout smudges through our filter-process' '
	(cd ours && rm -f m3.bin k1025.bin && git checkout -- . && git status --porcelain >../status) &&
	test_must_be_empty status &&
	test_cmp m3.bin ours/m3.bin &&
	test_cmp k1025.bin ours/k1025.bin
'

test_expect_success 'stock git clone: our smudge fetches missing objects from the remote (here local)' '
	git -c filter.lfs.process="git-model filter-process" -c filter.lfs.required=true \
		clone -q ours ours-smudged &&
	test_cmp m3.bin ours-smudged/m3.bin &&
	test_cmp m3.bin "$(object_path ours-smudged $(sha256sum m3.bin | cut -d" " -f1))"
'

test_expect_success 'a checkout whose object is missing and cannot be fetched fails naming the object' '
	git clone -q --no-checkout ours ours-clone &&
	(cd ours-clone && git model install --local -q && git remote remove origin &&
	 test_must_fail git checkout HEAD -- . 2>../err) &&
	test_grep "git-model filter-process: .*LFS object .* is not in .* and could not be downloaded" err &&
	rm -rf ours-clone
'

test_expect_success 'git model lfs-fetch --checkout copies objects from a local remote, verified' '
	rm -rf ours-clone &&
	GIT_LFS_SKIP_SMUDGE=1 git -c filter.lfs.process="git-model filter-process" \
		-c filter.lfs.required=true clone -q ours ours-clone &&
	(cd ours-clone && git model install --local -q &&
	 git model lfs-fetch --checkout >../out && git status --porcelain >../status) &&
	test_grep "^fetched 3 objects" out &&
	test_must_be_empty status &&
	test_cmp m3.bin ours-clone/m3.bin
'

test_expect_success GIT_LFS 'a repository written by git-lfs is read by git-model' '
	git init -q theirs &&
	(cd theirs && git lfs install --local >/dev/null && git lfs track "*.bin" >/dev/null &&
	 cp ../m3.bin ../k1024.bin . && git add . && git commit -q -m lfs &&
	 git model install --local --force -q &&
	 rm m3.bin k1024.bin && git checkout -- . && git status --porcelain >../status) &&
	test_must_be_empty status &&
	test_cmp m3.bin theirs/m3.bin &&
	test_cmp k1024.bin theirs/k1024.bin
'

test_expect_success GIT_LFS 'a repository written by git-model is read by git-lfs' '
	(cd ours && git lfs install --local --force >/dev/null &&
	 rm m3.bin k1025.bin && git checkout -- . && git status --porcelain >../status &&
	 git lfs fsck && git lfs ls-files >../ls &&
	 git model install --local --force -q) &&
	test_must_be_empty status &&
	test_cmp m3.bin ours/m3.bin &&
	test_line_count = 3 ls
'

test_expect_success 'a linked worktree shares the object store of its repository' '
	(cd ours && git worktree add -q ../ours-wt) &&
	test_cmp m3.bin ours-wt/m3.bin &&
	head -c 5000 /dev/urandom >wt.bin &&
	cp wt.bin ours-wt/ &&
	(cd ours-wt && git add wt.bin && git commit -q -m wt &&
	 rm wt.bin && git checkout -- wt.bin) &&
	test_cmp wt.bin ours-wt/wt.bin &&
	test_cmp wt.bin "$(object_path ours $(sha256sum wt.bin | cut -d" " -f1))" &&
	test_path_is_missing ours/.git/worktrees/ours-wt/lfs
'

# filter-process driven by hand: pkt-lines in, decoded packets out.
test_expect_success PYTHON3 'filter-process: clean and smudge, and an error per file without dying' '
	cat >drive.py <<-\PY &&
	import subprocess, sys
	def pkt(s):
	    if s is None: return b"0000"
	    if isinstance(s, str): s = s.encode()
	    return b"%04x" % (len(s) + 4) + s
	def run(msgs):
	    p = subprocess.run(["git-model", "filter-process"], input=b"".join(pkt(m) for m in msgs),
	                       capture_output=True)
	    out, i, res = p.stdout, 0, []
	    while i < len(out):
	        n = int(out[i:i + 4], 16)
	        res.append("<flush>" if n == 0 else out[i + 4:i + n].decode(errors="replace").rstrip("\n"))
	        i += 4 if n == 0 else n
	    sys.stdout.write("\n".join(res) + "\n")
	    sys.stderr.write(p.stderr.decode())
	    return p.returncode
	hello = ["git-filter-client\n", "version=2\n", None,
	         "capability=clean\n", "capability=smudge\n", "capability=delay\n", None]
	ptr = open(sys.argv[1], "rb").read()
	sys.exit(run(hello + ["command=frobnicate\n", "pathname=a\n", None, "x", None,
	                      "command=clean\n", "pathname=one.bin\n", None, "x", None,
	                      "command=smudge\n", "pathname=m.bin\n", None, ptr, None,
	                      "command=smudge\n", "pathname=gone.bin\n", None,
	                      open(sys.argv[2], "rb").read(), None]))
	PY
	(cd scratch && git model clean -- one.bin <../one.bin >../one.ptr &&
	 python3 ../drive.py ../one.ptr ../looks-like-pointer.bin >../out 2>../err) &&
	cat >expect <<-EOF &&
	git-filter-server
	version=2
	<flush>
	capability=clean
	capability=smudge
	<flush>
	status=error
	<flush>
	status=success
	<flush>
	$(sed -n 1p one.ptr)
	$(sed -n 2p one.ptr)
	$(sed -n 3p one.ptr)
	<flush>
	<flush>
	status=success
	<flush>
	x
	<flush>
	<flush>
	status=error
	<flush>
	EOF
	test_cmp expect out &&
	test_grep "git-model filter-process: a: unknown filter command .frobnicate." err &&
	test_grep "git-model filter-process: gone.bin: LFS object 0000000000000000000000000000000000000000000000000000000000000000" err
'

# pkt TEXT: one pkt-line holding TEXT and a newline.
pkt () {
	printf "%04x%s\n" $((${#1} + 5)) "$1"
}

test_expect_success 'filter-process: hostile or broken input is a clear error, not a crash' '
	cd scratch &&
	printf "zzzz" | test_expect_code 1 git model filter-process >out 2>err &&
	test_grep "bad pkt-line header" err &&
	{ pkt git-filter-client && pkt version=2 && printf 0000ffff; } |
		test_expect_code 1 git model filter-process >out 2>err &&
	test_grep "invalid pkt-line length 65535" err &&
	{ pkt git-filter-xxx && printf 0000; } | test_expect_code 1 git model filter-process >out 2>err &&
	test_grep "expected .git-filter-client., got .git-filter-xxx." err &&
	{ pkt git-filter-client && pkt version=1 && printf 0000; } |
		test_expect_code 1 git model filter-process >out 2>err &&
	test_grep "does not offer protocol version 2" err &&
	{ pkt git-filter-client && pkt version=2 && printf 0000 && printf 001bcapabil; } |
		test_expect_code 1 git model filter-process >out 2>err &&
	test_grep "closed the pipe in the middle of a packet" err &&
	{ pkt git-filter-client && pkt version=2 && printf 0000 && pkt capability=clean && printf 0000 &&
	  pkt command=clean && pkt pathname=x && printf 0000 && printf 0009abcde; } |
		test_expect_code 1 git model filter-process >out 2>err &&
	test_grep "EOF in the content of .x." err &&
	test_expect_code 1 git model filter-process </dev/null 2>err &&
	test_grep "run by git" err &&
	ls .git/lfs/tmp >tmpfiles &&
	test_must_be_empty tmpfiles
'

test_expect_success 'clean and smudge: usage' '
	test_expect_code 129 git model clean a b </dev/null 2>err &&
	test_grep "too many arguments" err &&
	test_expect_code 129 git model filter-process x 2>err &&
	test_grep "takes no arguments" err
'

test_done
