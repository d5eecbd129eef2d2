# bash completion for git-model, git-infer, git-train and git-adapter.
#
# Works two ways:
#  - "git model <TAB>": git's own completion loads this file (installed as
#    .../bash-completion/completions/git-model, and a link per command) and
#    calls _git_model, _git_infer, ...;
#  - "git-model <TAB>": the complete -F lines at the end.
#
# Options are never listed here: each command prints its own with
# --git-completion-helper, so completion follows the build that is
# installed.  Only what an option's value or a positional argument can be
# is known here.

# __gm_helper EXE [SUBCOMMAND]: the words the command offers.
__gm_helper ()
{
	"$@" --git-completion-helper 2>/dev/null
}

# __gm_reply CUR WORD...: COMPREPLY from the words matching CUR.  We run
# with -o nospace (as git's completion does), so finished words get their
# space here and "--opt=" does not.
__gm_reply ()
{
	local cur=$1 w
	shift
	COMPREPLY=()
	for w in "$@"; do
		case "$w" in
		"$cur"*)
			case "$w" in
			*=|*/) COMPREPLY+=("$w") ;;
			*) COMPREPLY+=("$w ") ;;
			esac ;;
		esac
	done
}

# __gm_reply_paths CUR [-d]: files and directories (or directories only).
__gm_reply_paths ()
{
	local cur=$1 p
	COMPREPLY=()
	while IFS= read -r p; do
		if [ -d "$p" ]; then
			COMPREPLY+=("$p/")
		elif [ "$2" != -d ]; then
			COMPREPLY+=("$p ")
		fi
	done < <(compgen -f -- "$cur")
}

# __gm_add_models CUR: the registered models whose names start with CUR,
# added to COMPREPLY (git model list prints the name first).
__gm_add_models ()
{
	local m
	for m in $(git-model list 2>/dev/null | awk '{print $1}'); do
		case "$m" in
		"$1"*) COMPREPLY+=("$m ") ;;
		esac
	done
}

# __gm_complete EXE FIRST CWORD WORD...: complete word CWORD of the command
# line WORD... whose command-specific part starts at index FIRST.
__gm_complete ()
{
	local exe=$1 first=$2 cword=$3
	shift 3
	local words=("$@")
	local cur=${words[cword]} prev=${words[cword-1]} sub= subs= i opts

	case "$exe" in
	git-model|git-adapter) subs=$(__gm_helper "$exe") ;;
	esac
	if [ -n "$subs" ]; then
		for ((i = first; i < cword; i++)); do
			case " $subs " in
			*" ${words[i]} "*) sub=${words[i]}; break ;;
			esac
		done
		if [ -z "$sub" ]; then
			case "$cur" in
			-*) __gm_reply "$cur" --version --help ;;
			*) __gm_reply "$cur" $subs ;;
			esac
			return
		fi
	fi

	# git model worktree SUBCOMMAND: one level more.
	local wsub= wsubs
	if [ "$exe $sub" = "git-model worktree" ]; then
		wsubs=$(__gm_helper git-model worktree)
		for ((i = first; i < cword; i++)); do
			case " $wsubs " in
			*" ${words[i]} "*) wsub=${words[i]} ;;
			esac
		done
		if [ -z "$wsub" ]; then
			case "$cur" in
			-*) COMPREPLY=() ;;
			*) __gm_reply "$cur" $wsubs ;;
			esac
			return
		fi
		sub="worktree $wsub"
	fi

	# The value of an option: "--opt VALUE", or "--opt=VALUE" as one word
	# or, when "=" breaks words (bash's default), as "--opt" "=" "VALUE".
	# Bash replaces only the part after "=" then, so no prefix is added.
	local opt= val=$cur pre=
	if [ "$cur" = "=" ]; then
		opt=$prev val=
	elif [ "$prev" = "=" ] && [ $cword -ge 2 ]; then
		opt=${words[cword-2]}
	else
		case "$cur" in
		--*=*)
			opt=${cur%%=*} val=${cur#*=}
			case "$COMP_WORDBREAKS" in
			*=*) ;;
			*) pre="$opt=" ;;
			esac ;;
		*)
			case "$prev" in
			--dtype|-m|--model|--check-data|--logits-out|--render-chat|--tools|--remote|--driver|--worktree|\
			--data|--eval-data|--trace|--output|--resume|--init-adapter|--schedule|--targets|--kv-type|\
			--matmul|--type|--quant|--perplexity|--follow) opt=$prev ;;
			esac ;;
		esac
	fi
	if [ -n "$opt" ]; then
		case "$opt" in
		--dtype) __gm_reply "$val" bf16 f16 f32 ;;
		--kv-type) __gm_reply "$val" auto f32 bf16 f16 ;;
		--matmul) __gm_reply "$val" precise fast ;;
		--type|--quant) __gm_reply "$val" Q8_0 Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S Q5_1 Q5_0 Q4_1 Q4_0 BF16 F16 F32 ;;
		--perplexity) __gm_reply_paths "$val" ;;
		-m|--model) __gm_reply_paths "$val" -d; __gm_add_models "$val" ;;
		--output|--resume|--init-adapter) __gm_reply_paths "$val" -d ;;
		--check-data|--logits-out|--render-chat|--tools|--data|--eval-data|--trace|--follow) __gm_reply_paths "$val" ;;
		--remote) __gm_reply "$val" $(git remote 2>/dev/null) ;;
		--driver) __gm_reply "$val" auto overlay fuse reflink hardlink copy ;;
		--worktree) __gm_reply_paths "$val" -d ;;
		--schedule) __gm_reply "$val" cosine linear constant ;;
		--targets) __gm_reply "$val" all-linear q_proj k_proj v_proj o_proj gate_proj up_proj down_proj ;;
		*) COMPREPLY=(); return ;;
		esac
		COMPREPLY=("${COMPREPLY[@]/#/$pre}")
		return
	fi

	case "$cur" in
	-*)
		opts=$(__gm_helper "$exe" $sub)
		__gm_reply "$cur" $opts
		return ;;
	esac

	# Positional arguments.
	if [ "$exe" = git-model ]; then
		case "$sub" in
		seed) # any number of NAME[@REV]
			case "${words[cword - 1]}" in
			--upload-limit|--port) ;;
			*) COMPREPLY=()
			   __gm_add_models "$cur"
			   return ;;
			esac ;;
		fetch|pull|push|rm|fsck|gc|bundle|info|quantize|checkout|"worktree add"|"worktree list"|"worktree prune"|"worktree repair")
			local n=0
			for ((i = first; i < cword; i++)); do
				case "${words[i]}" in
				"$sub"|worktree|"$wsub"|-*) ;;
				*) n=$((n + 1)) ;;
				esac
			done
			if [ $n = 0 ]; then
				COMPREPLY=()
				case "$sub" in
				info|quantize|fsck|gc|"worktree repair") __gm_reply_paths "$cur" -d ;;
				esac
				__gm_add_models "$cur"
				return
			fi ;;
		esac
	fi
	if [ "$exe $sub" = "git-model synth" ]; then
		local n=0
		for ((i = first; i < cword; i++)); do
			case "${words[i]}" in
			synth|-*) ;;
			*) n=$((n + 1)) ;;
			esac
		done
		if [ $n = 0 ]; then
			__gm_reply "$cur" tiny qwen3-0.6b qwen3-1.7b
			return
		fi
	fi
	case "$exe $sub" in
	"git-model lfs-push") __gm_reply "$cur" $(git remote 2>/dev/null); return ;;
	"git-model lfs-fetch"|"git-model install"|"git-model filter-process") COMPREPLY=(); return ;;
	"git-model clean"|"git-model smudge"|"git-model track") __gm_reply_paths "$cur"; return ;;
	esac
	__gm_reply_paths "$cur" -d
}

# Called by git's completion for "git model ...", with words, cword and
# __git_cmd_idx (the index of "model") set by it.
_git_model () { __gm_complete git-model $((${__git_cmd_idx:-1} + 1)) "$cword" "${words[@]}"; }
_git_infer () { __gm_complete git-infer $((${__git_cmd_idx:-1} + 1)) "$cword" "${words[@]}"; }
_git_train () { __gm_complete git-train $((${__git_cmd_idx:-1} + 1)) "$cword" "${words[@]}"; }
_git_adapter () { __gm_complete git-adapter $((${__git_cmd_idx:-1} + 1)) "$cword" "${words[@]}"; }

# The dashed forms, "git-model ...".
__gm_complete_dashed ()
{
	__gm_complete "${COMP_WORDS[0]##*/}" 1 "$COMP_CWORD" "${COMP_WORDS[@]}"
}
complete -o bashdefault -o default -o nospace -F __gm_complete_dashed \
	git-model git-infer git-train git-adapter 2>/dev/null
