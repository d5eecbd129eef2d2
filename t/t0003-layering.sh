#!/bin/sh
test_description='libcore layering: no include cycle between modules, folders include only the folders below them'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# A module is a public header and the .c files implementing it: X.h,
# X-internal.h (its private helpers), X.c (or X.cc: C++), and X-anything.c when there is no
# X-anything.h (kernels-avx512.c belongs to kernels, ops-cpu.c to ops).
# Module A depends on module B when a file of A includes a header of B.
# The checks read the sources only; they need no build.
#
# Once libcore has folders, each file is in one, and a folder includes only
# itself and the folders its line below lists.  This table is the layering:
# change it deliberately, and say why in docs/design-notes.md ("Layout").
cat >folders.allowed <<\EOF
base:
formats: base
text: base
ops: base formats
cpu: base formats ops
engine: base formats text ops cpu
train: base formats text ops cpu engine
storage: base
manage: base formats text ops cpu engine train storage
serve: base formats text ops cpu engine train storage manage
EOF

LIBCORE="$GM_SRC_DIR/libcore"

cat >layering.awk <<\EOF
# Input: the list of files (-v files_list: one path per line, relative to
# libcore), the list of includes (-v includes_list: PATH:LINE:TEXT of every
# #include "..." line), then, for mode=decls, the sources themselves (named
# by their path relative to libcore); the table of folders (-v table).
# Prints one problem per line (with indented evidence); nothing when all
# is well.
BEGIN {
	while ((getline l < table) > 0) {
		split(l, w, /[: ]+/)
		known[w[1]] = 1
		for (i = 2; i in w; i++)
			if (w[i] != "")
				allowed[w[1], w[i]] = 1
	}
}
function base(p,   b) { b = p; sub(/.*\//, "", b); return b }
function stem(p,   s) { s = base(p); sub(/\.(c|h|cc)$/, "", s); return s }
function dir(p,   d) { if (p !~ /\//) return ""; d = p; sub(/\/[^\/]*$/, "", d); return d }
function folder(p,   f) { if (p !~ /\//) return ""; f = p; sub(/\/.*/, "", f); return f }
function module(p,   s, t) {
	s = stem(p)
	if (p ~ /\.h$/) {
		sub(/-internal$/, "", s)
		return s
	}
	for (t = s; ; sub(/-[^-]*$/, "", t)) {
		if (t in header)
			return t
		if (t !~ /-/)
			return s
	}
}
FILENAME == files_list {
	file[$0] = 1
	nfiles++
	order[nfiles] = $0
	if ($0 ~ /\//)
		foldered = 1
	if ($0 ~ /\.h$/) {
		s = stem($0)
		sub(/-internal$/, "", s)
		header[s] = 1
		if (base($0) in byname)
			dup[base($0)] = byname[base($0)] " and " $0
		byname[base($0)] = $0
	}
	next
}
FILENAME == includes_list {
	path = $0
	sub(/:.*/, "", path)
	rest = substr($0, length(path) + 2)
	line = rest
	sub(/:.*/, "", line)
	text = substr(rest, length(line) + 2)
	name = text
	sub(/^[^"]*"/, "", name)
	sub(/".*/, "", name)
	# with folders, every include of a libcore header names its folder
	# (one spelling everywhere, and no clash with the build's config.h)
	if (foldered && name !~ /\// && base(name) in byname)
		bare[++nbare] = path ":" line ": " text " (write \"" byname[base(name)] "\")"
	target = ""
	d = dir(path)
	if (d != "" && (d "/" name) in file)
		target = d "/" name
	else if (name in file)
		target = name
	if (target == "")
		next
	from = module(path)
	to = module(target)
	where = path ":" line ": " text
	if (foldered) {
		ff = folder(path)
		ft = folder(target)
		if (ff != ft && !((ff SUBSEP ft) in allowed) && (ff in known) && (ft in known))
			badedge[++nbad] = where " (" ff "/ may not include " ft "/)"
	}
	if (from == to)
		next
	if (!((from SUBSEP to) in evidence)) {
		evidence[from, to] = where
		adj[from] = adj[from] " " to
	}
	next
}
mode == "decls" && FNR == 1 { incomment = 0 }
mode == "decls" {
	# strip comments, then look at declarations and definitions that
	# start in column 0 (the project's style)
	rest = $0
	out = ""
	while (rest != "") {
		if (incomment) {
			i = index(rest, "*/")
			if (!i)
				break
			rest = substr(rest, i + 2)
			incomment = 0
		} else {
			i = index(rest, "/*")
			if (!i) {
				out = out rest
				break
			}
			out = out substr(rest, 1, i - 1)
			rest = substr(rest, i + 2)
			incomment = 1
		}
	}
	if (FILENAME ~ /\.c$/ && match(out, /^[A-Z_0-9]+\(gm_[a-z0-9_]+/)) {
		# a definition made by a macro: GM_DEFINE_LOG(gm_debug, ...)
		name = substr(out, RSTART, RLENGTH)
		sub(/.*\(/, "", name)
		def[name] = FILENAME
		next
	}
	if (out !~ /^[A-Za-z_]/ || out ~ /^(typedef|static|extern|enum|union|struct [A-Za-z_0-9]* *\{)/)
		next
	if (!match(out, /gm_[a-z0-9_]+[ \t]*\(/) || substr(out, RSTART - 2, 2) == "(*")
		next
	name = substr(out, RSTART, RLENGTH)
	sub(/[ \t]*\($/, "", name)
	if (FILENAME ~ /\.h$/) {
		if (!(name in decl))
			decl[name] = FILENAME ":" FNR
	} else if (out !~ /;[ \t]*$/) {
		def[name] = FILENAME
	}
	next
}
function visit(m,   i, n, tos, k, c, j) {
	state[m] = 1
	depth++
	stack[depth] = m
	n = split(adj[m], tos, " ")
	for (i = 1; i <= n; i++) {
		if (state[tos[i]] == 1) {
			for (k = depth; stack[k] != tos[i]; k--)
				;
			c = "cycle:"
			for (j = k; j <= depth; j++)
				c = c " " stack[j] " ->"
			c = c " " tos[i]
			for (j = k; j <= depth; j++)
				c = c "\n\t" evidence[stack[j], (j < depth ? stack[j + 1] : tos[i])]
			print c
		} else if (!state[tos[i]]) {
			visit(tos[i])
		}
	}
	depth--
	state[m] = 2
}
END {
	if (mode == "cycles") {
		for (i = 1; i <= nfiles; i++)
			if (!state[module(order[i])])
				visit(module(order[i]))
	} else if (mode == "folders") {
		if (!foldered)
			exit
		for (n in dup)
			print "two headers named " n ": " dup[n]
		for (i = 1; i <= nfiles; i++) {
			f = folder(order[i])
			if (f == "")
				print order[i] ": in no folder (libcore has folders; see t/t0003-layering.sh)"
			else if (!(f in known))
				print order[i] ": folder " f "/ is not in the table of t/t0003-layering.sh"
		}
		for (i = 1; i <= nbad; i++)
			print "upward include: " badedge[i]
		for (i = 1; i <= nbare; i++)
			print "include without its folder: " bare[i]
	} else if (mode == "decls") {
		for (n in decl) {
			h = decl[n]
			sub(/:.*/, "", h)
			if ((n in def) && module(def[n]) != module(h))
				print n ": declared in " decl[n] " (module " module(h) ") but defined in " def[n] \
					" (module " module(def[n]) ")"
		}
	}
}
EOF

# check_layering MODE ROOT FILES INCLUDES [SOURCES...]: the problems MODE
# (cycles, decls, folders) finds in the tree at ROOT, whose files and
# include lines are listed in FILES and INCLUDES (in the current directory).
check_layering () {
	mode=$1 root=$2 fl=$PWD/$3 il=$PWD/$4 here=$PWD
	shift 4
	(cd "$root" && awk -v mode="$mode" -v table="$here/folders.allowed" -v files_list="$fl" \
		-v includes_list="$il" -f "$here/layering.awk" "$fl" "$il" "$@")
}

test_expect_success 'list libcore sources and their includes' '
	(cd "$LIBCORE" && find . -type f \( -name "*.c" -o -name "*.cc" -o -name "*.h" \) | sed "s|^\./||" | LC_ALL=C sort) >files &&
	test_line_count -gt 20 files &&
	while read f
	do
		grep -n "^[[:space:]]*#[[:space:]]*include[[:space:]]*\"" "$LIBCORE/$f" | sed "s|^|$f:|" || :
	done <files >includes &&
	test_grep "error.h" includes
'

test_expect_success 'no include cycle between libcore modules' '
	check_layering cycles "$LIBCORE" files includes >problems &&
	test_must_be_empty problems
'

test_expect_success 'a header declares only functions its own module defines' '
	check_layering decls "$LIBCORE" files includes $(cat files) >problems &&
	test_must_be_empty problems
'

test_expect_success 'libcore folders include only the folders below them' '
	check_layering folders "$LIBCORE" files includes >problems &&
	test_must_be_empty problems
'

test_expect_success 'the checks see a cycle, a misplaced definition, an upward include, a bare include' '
	mkdir -p fake/base fake/storage &&
	printf "#include \"storage/b.h\"\n" >fake/base/a.h &&
	printf "#include \"base/a.h\"\n" >fake/storage/b.h &&
	printf "#include \"storage/b.h\"\nint gm_b_thing(void)\n{\n\treturn 0;\n}\n" >fake/base/a.c &&
	printf "int gm_b_thing(void);\n" >>fake/storage/b.h &&
	printf "%s\n" base/a.c base/a.h storage/b.h >files.fake &&
	printf "%s\n" "base/a.h:1:#include \"storage/b.h\"" "storage/b.h:1:#include \"base/a.h\"" \
		"base/a.c:1:#include \"storage/b.h\"" "base/a.c:2:#include \"a.h\"" >includes.fake &&
	check_layering cycles fake files.fake includes.fake >cycles.out &&
	check_layering decls fake files.fake includes.fake base/a.c base/a.h storage/b.h >decls.out &&
	check_layering folders fake files.fake includes.fake >folders.out &&
	test_grep "^cycle: a -> b -> a" cycles.out &&
	test_grep "base/a.h:1: #include \"storage/b.h\"" cycles.out &&
	test_grep "gm_b_thing: declared in storage/b.h:2 (module b) but defined in base/a.c (module a)" decls.out &&
	test_grep "upward include: base/a.h:1: #include \"storage/b.h\" (base/ may not include storage/)" folders.out &&
	test_grep "include without its folder: base/a.c:2: #include \"a.h\" (write \"base/a.h\")" folders.out
'

test_done
