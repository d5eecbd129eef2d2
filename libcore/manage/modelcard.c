/* modelcard.c - README.md with the Hub's metadata for an adapter (see modelcard.h). */
#include "manage/modelcard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/registry.h"
#include "train/trainplot.h"

/* A YAML scalar that is safe whatever s holds: a JSON string. */
static void add_str(gm_buf *b, const char *s)
{
	json_object *o = json_object_new_string(s ? s : "");

	gm_buf_adds(b, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void add_num(gm_buf *b, double v)
{
	if (isfinite(v))
		gm_buf_addf(b, "%.6g", v);
	else
		gm_buf_adds(b, "null");
}

static void add_data(gm_buf *b, const gm_modelcard_data *d)
{
	gm_buf_adds(b, "{file: ");
	add_str(b, d->file);
	if (d->sha256 && *d->sha256) {
		gm_buf_adds(b, ", sha256: ");
		add_str(b, d->sha256);
	}
	if (d->examples >= 0)
		gm_buf_addf(b, ", examples: %lld", (long long)d->examples);
	gm_buf_adds(b, "}");
}

int gm_modelcard_write(const char *dir, const gm_modelcard *c, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	char *path;
	int ret;

	gm_buf_adds(&b, "---\nbase_model: ");
	add_str(&b, c->base_model);
	gm_buf_adds(&b, "\nlibrary_name: \"peft\"\npipeline_tag: \"text-generation\"\n"
		    "tags: [\"lora\", \"git-model\"]\ngit_model:\n  adapter: ");
	add_str(&b, c->adapter);
	if (c->base_revision && *c->base_revision) {
		gm_buf_adds(&b, "\n  base_revision: ");
		add_str(&b, c->base_revision);
	}
	gm_buf_adds(&b, "\n  datasets:\n    - ");
	add_data(&b, &c->train);
	if (c->eval.file) {
		gm_buf_adds(&b, "\n    - ");
		add_data(&b, &c->eval);
	}
	if (c->hyperparameters)
		gm_buf_addf(&b, "\n  hyperparameters: %s", json_object_to_json_string_ext(c->hyperparameters,
			    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	gm_buf_addf(&b, "\n  results: {steps: %lld, train_loss: ", (long long)c->steps);
	add_num(&b, c->train_loss);
	gm_buf_adds(&b, ", eval_loss: ");
	add_num(&b, c->eval_loss);
	gm_buf_adds(&b, "}\n---\n\n");

	/* the body: for people */
	gm_buf_addf(&b, "# %s\n\nA LoRA adapter for `%s`, trained with `git train` (git-model).\n\n", c->adapter,
		    c->base_model);
	gm_buf_addf(&b, "- Steps: %lld\n- Final training loss: ", (long long)c->steps);
	add_num(&b, c->train_loss);
	if (isfinite(c->eval_loss)) {
		gm_buf_adds(&b, "\n- Final eval loss: ");
		add_num(&b, c->eval_loss);
	}
	gm_buf_addf(&b, "\n- Training data: `%s`", c->train.file ? c->train.file : "");
	if (c->train.sha256 && *c->train.sha256)
		gm_buf_addf(&b, " (sha256 `%s`)", c->train.sha256);
	gm_buf_adds(&b, "\n\n");
	if (c->has_plot)
		gm_buf_addf(&b, "![training and eval loss](%s)\n\nThe loss at every step is in `%s`.\n\n",
			    GM_TRAINPLOT_FILE, GM_TRAINLOG_FILE);
	gm_buf_addf(&b, "## Use\n\n```python\nfrom peft import PeftModel\nfrom transformers import "
		    "AutoModelForCausalLM\n\nbase = AutoModelForCausalLM.from_pretrained(\"%s\")\n"
		    "model = PeftModel.from_pretrained(base, \"PATH-OR-REPO-OF-THIS-ADAPTER\")\n```\n\n"
		    "With git-model: `git infer -m MODEL --adapter %s -p ...`, or from a server, the model "
		    "`MODEL:%s`.\n", c->base_model, c->adapter, c->adapter);
	path = gm_path_join(dir, GM_MODELCARD_FILE);
	ret = gm_write_file_atomic(path, b.buf, b.len, 0666, err);
	free(path);
	gm_buf_release(&b);
	return ret;
}

char *gm_modelcard_base_model(const char *model_dir)
{
	gm_registry *reg = NULL;
	gm_registry_model m;
	char *real = realpath(model_dir, NULL), *out = NULL;
	const char *base;
	char *db = NULL;
	int found = 0;

	memset(&m, 0, sizeof(m));
	/* only an existing registry: a card is no reason to create one */
	if (real && !gm_registry_default_path(&db, NULL) && gm_is_file(db) && !gm_registry_open(db, &reg, NULL) && !gm_registry_find_by_path(reg, real, &m, &found, NULL) &&
	    found) {
		if (m.source && !strncmp(m.source, "hf:", 3)) {
			size_t n = strcspn(m.source + 3, "@");
			out = strndup(m.source + 3, n);
		} else {
			out = gm_xstrdup(m.name);
		}
		gm_registry_model_release(&m);
	}
	if (reg)
		gm_registry_close(reg);
	free(db);
	if (!out) {
		const char *p = real ? real : model_dir;
		size_t n = strlen(p);

		while (n > 1 && p[n - 1] == '/')
			n--;
		base = p + n;
		while (base > p && base[-1] != '/')
			base--;
		out = strndup(base, (size_t)(p + n - base));
	}
	free(real);
	return out;
}
