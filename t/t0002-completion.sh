#!/bin/sh
test_description='bash completion: subcommands, options, option values, paths'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

COMPLETION="$GM_SRC_DIR/contrib/completion/git-model-completion.bash"
GIT_COMPLETION=/usr/share/bash-completion/completions/git
BASH_COMPLETION=/usr/share/bash-completion/bash_completion
test_have_prereq BASH && [ -f "$GIT_COMPLETION" ] && [ -f "$BASH_COMPLETION" ] &&
	test_set_prereq GIT_COMPLETION

# complete WORD...: what TAB offers after the words (the last one is the
# word being completed), one per line, through "git-model" and friends.
complete_dashed () {
	bash -c '
		. "$0"
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		__gm_complete_dashed
		printf "%s\n" "${COMPREPLY[@]}"
	' "$COMPLETION" "$@"
}

# The same through git's own completion ("git model ...").
complete_git () {
	bash -c '
		. "$1"; . "$2"; . "$0"
		shift 2
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"
		COMP_POINT=${#COMP_LINE}
		__git_wrap__git_main
		printf "%s\n" "${COMPREPLY[@]}"
	' "$COMPLETION" "$BASH_COMPLETION" "$GIT_COMPLETION" "$@"
}

test_expect_success BASH 'the script is valid bash and defines the git hooks' '
	bash -n "$COMPLETION" &&
	bash -c ". \"\$0\" && declare -F _git_model _git_infer _git_train _git_adapter" "$COMPLETION" >out &&
	test_line_count = 4 out &&
	bash -c ". \"\$0\" && complete -p git-model" "$COMPLETION" >out &&
	test_grep "__gm_complete_dashed git-model" out
'

test_expect_success BASH 'git-model offers exactly the built subcommands' '
	complete_dashed git-model "" >actual &&
	git model --git-completion-helper | tr " " "\n" | sed "/^$/d; s/$/ /" >expect &&
	test_cmp expect actual &&
	printf "synth \n" >expect &&
	complete_dashed git-model sy >actual &&
	test_cmp expect actual
'

test_expect_success BASH 'options come from the command itself' '
	complete_dashed git-model synth --se >actual &&
	echo "--seed=" >expect &&
	test_cmp expect actual &&
	complete_dashed git-infer --che >actual &&
	echo "--check " >expect &&
	test_cmp expect actual &&
	printf "%s\n" "--chat " "--check " >expect &&
	complete_dashed git-infer --ch >actual &&
	test_cmp expect actual &&
	complete_dashed git-model --ver >actual &&
	echo "--version " >expect &&
	test_cmp expect actual
'

test_expect_success BASH 'option values: dtypes, shapes' '
	printf "bf16 \nf16 \nf32 \n" >expect &&
	complete_dashed git-model synth --dtype "" >actual &&
	test_cmp expect actual &&
	printf "f16 \nf32 \n" >expect &&
	complete_dashed git-model synth --dtype = f >actual &&
	test_cmp expect actual &&
	printf "qwen3-0.6b \nqwen3-1.7b \n" >expect &&
	complete_dashed git-model synth qw >actual &&
	test_cmp expect actual
'

test_expect_success BASH 'the shapes offered are the ones synth knows' '
	test_expect_code 129 git model synth no-such-shape out 2>err &&
	sed -n "s/.*(known: \([^)]*\)).*/\1/p" err | tr -d "," | tr " " "\n" | sort >expect &&
	test_line_count -gt 1 expect &&
	complete_dashed git-model synth "" | tr -d " " | sort >actual &&
	test_cmp expect actual
'

test_expect_success BASH 'paths: directories for models, files for data' '
	mkdir -p models/alpha models/beta &&
	echo "{}" >models/data.jsonl &&
	printf "models/alpha/\nmodels/beta/\n" >expect &&
	complete_dashed git-infer -m models/ | sort >actual &&
	test_cmp expect actual &&
	printf "models/data.jsonl \n" >expect &&
	complete_dashed git-train --check-data models/d >actual &&
	test_cmp expect actual &&
	complete_dashed git-infer --render-chat models/d >actual &&
	test_cmp expect actual
'

test_expect_success GIT_COMPLETION 'git model <TAB> goes through git'\''s completion' '
	printf "synth \n" >expect &&
	complete_git git model sy >actual &&
	test_cmp expect actual &&
	echo "--seed=" >expect &&
	complete_git git model synth --se >actual &&
	test_cmp expect actual &&
	printf "f16 \nf32 \n" >expect &&
	complete_git git model synth --dtype = f >actual &&
	test_cmp expect actual &&
	echo "--check " >expect &&
	complete_git git infer --che >actual &&
	test_cmp expect actual
'

test_expect_success BASH 'registered model names are offered where a model is expected' '
	mkdir -p fake &&
	echo "{}" >fake/config.json &&
	git model import -q fake alpha &&
	git model import -q fake alpine &&
	git model import -q fake beta &&
	printf "alpha \nalpine \n" >expect &&
	complete_dashed git-model fetch al >actual &&
	test_cmp expect actual &&
	complete_dashed git-model rm --yes al >actual &&
	test_cmp expect actual &&
	complete_dashed git-infer -m al >actual &&
	test_cmp expect actual &&
	complete_dashed git-model bundle alpha "" >actual &&
	! test_grep "^beta" actual
'

test_expect_success BASH 'worktrees: subcommands, drivers, model names, options' '
	complete_dashed git-model worktree "" >actual &&
	printf "add \nlist \nrm \nprune \nrepair \n" >expect &&
	test_cmp expect actual &&
	complete_dashed git-model checkout --driver h >actual &&
	echo "hardlink " >expect &&
	test_cmp expect actual &&
	complete_dashed git-model worktree add --driver= >actual &&
	test_grep "^overlay \$" actual &&
	test_grep "^copy \$" actual &&
	printf "alpha \nalpine \n" >expect &&
	complete_dashed git-model checkout al >actual &&
	test_cmp expect actual &&
	complete_dashed git-model worktree list al >actual &&
	test_cmp expect actual &&
	complete_dashed git-model worktree rm --f >actual &&
	echo "--force " >expect &&
	test_cmp expect actual &&
	complete_dashed git-model checkout --w >actual &&
	echo "--worktree=" >expect &&
	test_cmp expect actual
'

test_expect_success BASH 'git-train: data files, output directories, schedules and targets' '
	mkdir -p runs/one &&
	echo "{}" >runs/data.jsonl &&
	printf "runs/data.jsonl \n" >expect &&
	complete_dashed git-train --data runs/d >actual &&
	test_cmp expect actual &&
	complete_dashed git-train --eval-data runs/d >actual &&
	test_cmp expect actual &&
	printf "runs/one/\n" >expect &&
	complete_dashed git-train --resume runs/ >actual &&
	test_cmp expect actual &&
	printf "cosine \nconstant \n" >expect &&
	complete_dashed git-train --schedule co >actual &&
	test_cmp expect actual &&
	printf "all-linear \n" >expect &&
	complete_dashed git-train --targets al >actual &&
	test_cmp expect actual
'

test_done
