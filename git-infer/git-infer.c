/*
 * git-infer - run a model.
 *
 * For now only --check exists: load a model directory, validate its
 * config and every tensor against the architecture, and print a one-line
 * summary.  Text generation comes with the forward pass.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cmd.h"
#include "json.h"
#include "log.h"
#include "model.h"

static const char *const usage[] = {
	"git infer -m <model> --check [--json] [-v | -q]",
	NULL
};

static void print_summary(const gm_model *m)
{
	const gm_model_config *c = &m->config;
	gm_buf b = GM_BUF_INIT;
	char dtype[64];

	gm_weights_dtype_mix(m->weights, dtype, sizeof(dtype));
	gm_buf_add_human_count(&b, m->n_params);
	printf("ok: %s: %s, %lld layers, hidden %lld, %s parameters, %s, vocab %lld\n", m->dir, c->model_type,
	       (long long)c->num_hidden_layers, (long long)c->hidden_size, b.buf, dtype,
	       (long long)c->vocab_size);
	gm_buf_release(&b);
}

static void print_json(const gm_model *m)
{
	const gm_model_config *c = &m->config;
	json_object *o = json_object_new_object();
	char dtype[64];

	gm_weights_dtype_mix(m->weights, dtype, sizeof(dtype));
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "path", json_object_new_string(m->dir));
	json_object_object_add(o, "architecture", json_object_new_string(c->architecture));
	json_object_object_add(o, "model_type", json_object_new_string(c->model_type));
	json_object_object_add(o, "layers", json_object_new_int64(c->num_hidden_layers));
	json_object_object_add(o, "hidden_size", json_object_new_int64(c->hidden_size));
	json_object_object_add(o, "parameters", json_object_new_int64((int64_t)m->n_params));
	json_object_object_add(o, "dtype", json_object_new_string(dtype));
	json_object_object_add(o, "vocab_size", json_object_new_int64(c->vocab_size));
	json_object_object_add(o, "tensors", json_object_new_int64((int64_t)gm_weights_count(m->weights)));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static int check_model(const char *dir, int json, int verbosity)
{
	gm_error err = GM_ERROR_INIT;
	gm_model *m;

	if (gm_model_open(dir, &m, &err))
		return gm_cmd_error(&err);
	if (json)
		print_json(m);
	else if (verbosity >= 0)
		print_summary(m);
	gm_model_close(m);
	return 0;
}

int main(int argc, const char **argv)
{
	const char *model = NULL;
	int check = 0, json = 0, verbosity = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "dir", "the model directory"),
		GM_OPT_FLAG(0, "check", &check, "load and validate the model, print a summary"),
		GM_OPT_FLAG(0, "json", &json, "print the summary as one JSON object"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git infer", "git-infer", usage, options };

	n = gm_cmd_parse(&cmd, argc, argv, 0, 1, &status);
	if (n < 0)
		return status;
	if (n > 0)
		return gm_cmd_usage_error(&cmd, "unexpected argument '%s'", argv[0]);
	if (!model)
		return gm_cmd_usage_error(&cmd, "missing -m <model>: the model directory");
	if (!check)
		return gm_cmd_usage_error(&cmd, "nothing to do: text generation is not available yet; "
					  "use --check to validate a model");
	gm_cmd_set_verbosity(verbosity);
	return check_model(model, json, verbosity);
}
