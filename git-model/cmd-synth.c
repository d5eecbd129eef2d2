/*
 * git model synth - write a Hugging Face-layout model directory with random
 * weights of a real shape (for benchmarks, demos and CI without downloads).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "base/log.h"
#include "formats/synth.h"

static const char *const usage[] = {
	"git model synth [<options>] <shape> <dir>",
	NULL
};

struct progress {
	int enabled;
	time_t last;
};

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	time_t now = time(NULL);
	gm_buf b = GM_BUF_INIT;

	if (!p->enabled || (now == p->last && done < total))
		return;
	p->last = now;
	gm_buf_addf(&b, "\rwriting model.safetensors: %3d%% (", total ? (int)(100 * done / total) : 100);
	gm_buf_add_human_bytes(&b, done);
	gm_buf_adds(&b, " / ");
	gm_buf_add_human_bytes(&b, total);
	gm_buf_adds(&b, done < total ? ")   " : ")   \n");
	fputs(b.buf, stderr);
	gm_buf_release(&b);
}

int cmd_synth(int argc, const char **argv)
{
	const char *dtype_name = "bf16";
	unsigned long long seed = 0;
	long threads = 0, layers = 0, hidden = 0, intermediate = 0, heads = 0, kv_heads = 0;
	long head_dim = 0, vocab = 0, context = 0;
	int tie = -1, verbosity = 0, status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_STRING(0, "dtype", &dtype_name, "type", "weight dtype: bf16 (default), f16 or f32"),
		GM_OPT_U64(0, "seed", &seed, "n", "random seed (default 0): same seed, same bytes"),
		GM_OPT_INT(0, "threads", &threads, "n", "threads generating weights (default: all CPUs)", 1, 64),
		GM_OPT_GROUP("shape overrides (on top of <shape>)"),
		GM_OPT_INT(0, "layers", &layers, "n", "number of decoder layers", 1, 1024),
		GM_OPT_INT(0, "hidden", &hidden, "n", "hidden size", 1, 1 << 20),
		GM_OPT_INT(0, "intermediate", &intermediate, "n", "MLP intermediate size", 1, 1 << 22),
		GM_OPT_INT(0, "heads", &heads, "n", "attention heads", 1, 1024),
		GM_OPT_INT(0, "kv-heads", &kv_heads, "n", "key/value heads (divides heads)", 1, 1024),
		GM_OPT_INT(0, "head-dim", &head_dim, "n", "dimension of one head (even)", 2, 1024),
		GM_OPT_INT(0, "vocab", &vocab, "n", "vocabulary rows (>= 151669, the tokenizer's ids)", 1, 1 << 22),
		GM_OPT_INT(0, "context", &context, "n", "max_position_embeddings", 1, 1 << 24),
		GM_OPT_FLAG(0, "tie", &tie, "tie the output head to the embeddings (--no-tie: own lm_head)"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model synth", "git-model", usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_synth_opts o;
	struct progress prog = { 0, 0 };
	gm_buf line = GM_BUF_INIT;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n < 2)
		return gm_cmd_usage_error(&cmd, "missing %s", n ? "<dir>" : "<shape> and <dir>");
	if (n > 2)
		return gm_cmd_usage_error(&cmd, "too many arguments");
	gm_cmd_set_verbosity(verbosity);
	memset(&o, 0, sizeof(o));
	if (gm_synth_shape(argv[0], &o.config, &err))
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
	if (gm_dtype_from_user(dtype_name, &o.dtype, &err))
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
#define OVERRIDE(var, field) if (var) o.config.field = var
	OVERRIDE(layers, num_hidden_layers);
	OVERRIDE(hidden, hidden_size);
	OVERRIDE(intermediate, intermediate_size);
	OVERRIDE(heads, num_attention_heads);
	OVERRIDE(kv_heads, num_key_value_heads);
	OVERRIDE(head_dim, head_dim);
	OVERRIDE(vocab, vocab_size);
	OVERRIDE(context, max_position_embeddings);
#undef OVERRIDE
	if (tie >= 0)
		o.config.tie_word_embeddings = tie;
	o.seed = seed;
	o.threads = (int)threads;
	if (gm_synth_check(&o, &err))
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
	prog.enabled = verbosity >= 0 && isatty(2);
	o.progress = show_progress;
	o.progress_ctx = &prog;
	o.config.dtype = o.dtype;

	ret = gm_synth_write(argv[1], &o, &err);
	if (ret)
		return gm_cmd_error(&err);
	if (verbosity >= 0) {
		uint64_t numel[GM_DTYPE_COUNT] = { 0 };
		char dtype[16];

		numel[o.dtype] = 1;
		gm_dtype_mix_name(numel, dtype, sizeof(dtype));
		gm_buf_addf(&line, "wrote %s: %s, %lld layers, hidden %lld, ", argv[1], argv[0],
			    (long long)o.config.num_hidden_layers, (long long)o.config.hidden_size);
		gm_buf_add_human_count(&line, gm_model_config_param_count(&o.config));
		gm_buf_addf(&line, " parameters, %s, seed %llu", dtype, seed);
		puts(line.buf);
	}
	gm_buf_release(&line);
	return 0;
}
