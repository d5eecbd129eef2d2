/*
 * fuzz-peft.c - libFuzzer target for PEFT LoRA adapter directories
 * (gm_peft_open, libcore/formats/peft.c): adapter_config.json and
 * adapter_model.safetensors as `git adapter add` and `git infer --adapter`
 * read them from any hub.
 *
 * Each input is "adapter_config.json" FUZZ_SPLIT "adapter_model.safetensors"
 * (fuzz-common.h); without the separator there is no weights file.  Both
 * are written to a scratch directory that gm_peft_open reads.  A refusal
 * must explain itself.  An accepted adapter must hold what peft.h promises
 * its callers (the merge and the forward pass index A and B with these
 * numbers): modules sorted by layer and projection, found again by
 * gm_peft_find, named "model.layers.N.PARENT.PROJ" with that layer and
 * projection, selected by target_modules, A [rank, in] and B [out, rank]
 * in F32/F16/BF16 with rank > 0, a finite scale that agrees with
 * gm_peft_scale, and parameter and byte counts that add up; the norm of
 * small modules is computed (UBSan and ASan watch the Gram matrices).
 * When the config alone parses, the pattern lookups run on every
 * projection of two layers.
 */
#include <json-c/json.h>
#include <math.h>

#include "base/json.h"
#include "formats/dtype.h"
#include "formats/peft.h"
#include "fuzz-common.h"

static char dir[300], cfg_path[340], st_path[340];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s", fuzz_scratch_dir("peft"));
	snprintf(cfg_path, sizeof(cfg_path), "%s/" GM_PEFT_CONFIG_FILE, dir);
	snprintf(st_path, sizeof(st_path), "%s/" GM_PEFT_WEIGHTS_FILE, dir);
	return 0;
}

/* The config's lookups on module names, without weights. */
static void config_lookups(const uint8_t *data, size_t size)
{
	json_object *obj = NULL;
	gm_peft_config cfg;
	gm_error err = GM_ERROR_INIT;
	int layer, p, ret;

	if (gm_json_parse((const char *)data, size, "adapter_config.json", &obj, NULL))
		return;
	ret = gm_peft_config_parse(obj, "adapter_config.json", &cfg, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		json_object_put(obj);
		return;
	}
	CHECK(cfg.r > 0);
	for (layer = 0; layer < 2; layer++)
		for (p = 0; p < GM_PEFT_PROJ_COUNT; p++) {
			char name[128];

			snprintf(name, sizeof(name), "model.layers.%d.%s.%s", layer, gm_peft_proj_parent(p),
				 gm_peft_proj_name(p));
			(void)gm_peft_config_targets(&cfg, name);
			CHECK(gm_peft_config_rank(&cfg, name) > 0);
			(void)gm_peft_config_alpha(&cfg, name);
		}
	(void)gm_peft_config_scale(&cfg);
	gm_peft_config_release(&cfg);
	json_object_put(obj);
}

static int float_dtype(enum gm_dtype d)
{
	return d == GM_DTYPE_F32 || d == GM_DTYPE_F16 || d == GM_DTYPE_BF16;
}

static void check_adapter(const gm_peft_adapter *ad)
{
	uint64_t params = 0, bytes = 0;
	size_t i;

	for (i = 0; i < ad->n_modules; i++) {
		const gm_peft_module *m = &ad->modules[i];
		int layer;
		enum gm_peft_proj proj;
		gm_error err = GM_ERROR_INIT;

		CHECK(m->name && !gm_peft_parse_module_name(m->name, &layer, &proj, &err));
		CHECK(layer == m->layer && proj == m->proj && m->layer >= 0);
		CHECK(gm_peft_find(ad, m->layer, m->proj) == m);
		if (i)
			CHECK(m[-1].layer < m->layer || (m[-1].layer == m->layer && m[-1].proj < m->proj));
		CHECK(gm_peft_config_targets(&ad->config, m->name));
		CHECK(m->a && m->b && m->a->ndim == 2 && m->b->ndim == 2);
		CHECK(float_dtype(m->a->dtype) && float_dtype(m->b->dtype));
		CHECK(m->rank > 0 && m->in > 0 && m->out > 0);
		CHECK(m->a->shape[0] == m->rank && m->a->shape[1] == m->in);
		CHECK(m->b->shape[0] == m->out && m->b->shape[1] == m->rank);
		CHECK(isfinite(m->scale));
		CHECK(m->scale == gm_peft_scale(m->rank, m->alpha, ad->config.use_rslora));
		params += m->a->numel + m->b->numel;
		bytes += m->a->nbytes + m->b->nbytes;
		if (m->a->numel + m->b->numel <= 65536) {
			double norm = -1;
			CHECK(!gm_peft_module_norm(m, &norm, &err));
			CHECK(norm >= 0 || isnan(norm));
		}
	}
	CHECK(params == ad->n_params && bytes == ad->n_bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *st;
	size_t cfg_len, st_len;
	gm_peft_adapter *ad = NULL;
	gm_error err = GM_ERROR_INIT;
	int ret;

	fuzz_split(data, size, &cfg_len, &st, &st_len);
	config_lookups(data, cfg_len);
	fuzz_write_file(cfg_path, data, cfg_len);
	if (st != data + size)
		fuzz_write_file(st_path, st, st_len);
	else
		unlink(st_path);
	ret = gm_peft_open(dir, &ad, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(ad == NULL);
		return 0;
	}
	fuzz_accepted("adapter");
	check_adapter(ad);
	gm_peft_close(ad);
	return 0;
}
