/*
 * git-adapter - LoRA adapters of a model.
 *
 * "show" loads a PEFT adapter directory, or a sparse adapter directory,
 * validates it the way git infer will before applying it (libcore/formats/peft.h,
 * libcore/formats/sparse.h), and describes it.  The adapter is opened and checked
 * in full first, so a broken one is reported as an error rather than half
 * described.  "sparsify" turns a LoRA into a sparse delta adapter.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manage/adapter.h"
#include "train/trainplot.h"
#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "formats/dtype.h"
#include "base/fs.h"
#include "base/json.h"
#include "formats/peft.h"
#include "formats/sparse.h"

static const char *const usage[] = {
	"git adapter [--version] <command> [<args>]",
	NULL
};

static const char *const show_usage[] = {
	"git adapter show [-m <model>] [--json] <name-or-dir>",
	NULL
};

static const char *const sparsify_usage[] = {
	"git adapter sparsify [-m <model>] --density <d> [-o <out> | --name <name>] <name-or-dir>",
	NULL
};

/* "0-2, 5, 7-9" for the sorted, distinct layers[0..n). */
static void add_ranges(gm_buf *b, const int *layers, size_t n)
{
	size_t i, j;

	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && layers[j] == layers[j - 1] + 1; j++)
			;
		gm_buf_addf(b, "%s%d", i ? ", " : "", layers[i]);
		if (j - i > 1)
			gm_buf_addf(b, "-%d", layers[j - 1]);
	}
}

/* The distinct layers with a module of proj (all of them for GM_PEFT_PROJ_COUNT). */
static size_t collect_layers(const gm_peft_adapter *ad, int proj, int *out)
{
	size_t i, n = 0;

	/* modules are sorted by layer, so equal layers are adjacent */
	for (i = 0; i < ad->n_modules; i++) {
		const gm_peft_module *m = &ad->modules[i];
		if (proj != GM_PEFT_PROJ_COUNT && (int)m->proj != proj)
			continue;
		if (!n || out[n - 1] != m->layer)
			out[n++] = m->layer;
	}
	return n;
}

/* "8", or "4-8" when rank_pattern gives the layers of a projection different values. */
static void add_span_i(gm_buf *b, int64_t lo, int64_t hi)
{
	gm_buf_addf(b, lo == hi ? "%lld" : "%lld-%lld", (long long)lo, (long long)hi);
}

static void add_span_g(gm_buf *b, double lo, double hi)
{
	gm_buf_addf(b, lo == hi ? "%g" : "%g-%g", lo, hi);
}

enum { COL_NAME, COL_LAYERS, COL_SHAPE, COL_RANK, COL_SCALE, COL_NORM, N_COLS };

/* One row per projection: where it is adapted, its features, rank and scale. */
static void print_projections(const gm_peft_adapter *ad, int *layers)
{
	gm_buf cells[GM_PEFT_PROJ_COUNT][N_COLS];
	size_t width[N_COLS] = { 0 }, i;
	int p, c, present[GM_PEFT_PROJ_COUNT] = { 0 };

	for (p = 0; p < GM_PEFT_PROJ_COUNT; p++) {
		int64_t in[2] = { INT64_MAX, 0 }, out[2] = { INT64_MAX, 0 }, rank[2] = { INT64_MAX, 0 };
		double scale[2] = { 0, 0 }, norm[2] = { INFINITY, -INFINITY };
		size_t n = collect_layers(ad, p, layers);

		for (c = 0; c < N_COLS; c++)
			gm_buf_init(&cells[p][c]);
		if (!n)
			continue;
		present[p] = 1;
		for (i = 0; i < ad->n_modules; i++) {
			const gm_peft_module *m = &ad->modules[i];
			double nm;
			if ((int)m->proj != p)
				continue;
			/* the adapter was validated on open, so the norm cannot fail */
			if (!gm_peft_module_norm(m, &nm, NULL)) {
				norm[0] = nm < norm[0] ? nm : norm[0];
				norm[1] = nm > norm[1] ? nm : norm[1];
			}
			if (rank[0] == INT64_MAX)
				scale[0] = scale[1] = m->scale;
			in[0] = m->in < in[0] ? m->in : in[0];
			in[1] = m->in > in[1] ? m->in : in[1];
			out[0] = m->out < out[0] ? m->out : out[0];
			out[1] = m->out > out[1] ? m->out : out[1];
			rank[0] = m->rank < rank[0] ? m->rank : rank[0];
			rank[1] = m->rank > rank[1] ? m->rank : rank[1];
			scale[0] = m->scale < scale[0] ? m->scale : scale[0];
			scale[1] = m->scale > scale[1] ? m->scale : scale[1];
		}
		gm_buf_adds(&cells[p][COL_NAME], gm_peft_proj_name((enum gm_peft_proj)p));
		gm_buf_adds(&cells[p][COL_LAYERS], n == 1 ? "layer " : "layers ");
		add_ranges(&cells[p][COL_LAYERS], layers, n);
		add_span_i(&cells[p][COL_SHAPE], in[0], in[1]);
		gm_buf_adds(&cells[p][COL_SHAPE], " -> ");
		add_span_i(&cells[p][COL_SHAPE], out[0], out[1]);
		gm_buf_adds(&cells[p][COL_RANK], "rank ");
		add_span_i(&cells[p][COL_RANK], rank[0], rank[1]);
		gm_buf_adds(&cells[p][COL_SCALE], "scale ");
		add_span_g(&cells[p][COL_SCALE], scale[0], scale[1]);
		gm_buf_adds(&cells[p][COL_NORM], "|sBA| ");
		if (norm[0] <= norm[1])
			gm_buf_addf(&cells[p][COL_NORM], norm[0] == norm[1] ? "%.4g" : "%.4g-%.4g", norm[0], norm[1]);
		for (c = 0; c < N_COLS; c++)
			if (cells[p][c].len > width[c])
				width[c] = cells[p][c].len;
	}
	for (p = 0; p < GM_PEFT_PROJ_COUNT; p++) {
		if (present[p]) {
			printf("   ");
			for (c = 0; c < N_COLS - 1; c++)
				printf(" %-*s ", (int)width[c], cells[p][c].buf);
			printf(" %s\n", cells[p][c].buf);
		}
		for (c = 0; c < N_COLS; c++)
			gm_buf_release(&cells[p][c]);
	}
}

static void add_targets(gm_buf *b, const gm_peft_config *c)
{
	size_t i;

	switch (c->target_kind) {
	case GM_PEFT_TARGET_ALL_LINEAR:
		gm_buf_adds(b, "all-linear");
		break;
	case GM_PEFT_TARGET_REGEX:
		gm_buf_addf(b, "regex '%s'", c->target_modules[0]);
		break;
	case GM_PEFT_TARGET_LIST:
		for (i = 0; i < c->n_target_modules; i++)
			gm_buf_addf(b, "%s%s", i ? ", " : "", c->target_modules[i]);
		break;
	}
}

static void add_patterns(gm_buf *b, const struct gm_peft_pattern *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		gm_buf_addf(b, "%s%s=%g", i ? ", " : "", p[i].key, p[i].value);
}

static void print_text(const gm_peft_adapter *ad)
{
	const gm_peft_config *c = &ad->config;
	gm_buf b = GM_BUF_INIT;
	int *layers = gm_xmalloc((ad->n_modules + 1) * sizeof(*layers));
	char dtype[64];
	size_t n;

	gm_cmd_print_field("path:", "%s", ad->dir);
	gm_cmd_print_field("base model:", "%s", c->base_model ? c->base_model : "(not recorded)");
	if (c->task_type)
		gm_cmd_print_field("task type:", "%s", c->task_type);
	gm_cmd_print_field("rank:", "%lld", (long long)c->r);
	gm_cmd_print_field("alpha:", "%g", c->lora_alpha);
	gm_cmd_print_field("scaling:", "%g (%s)", gm_peft_config_scale(c),
		    c->use_rslora ? "rslora: alpha / sqrt(rank)" : "alpha / rank");
	gm_cmd_print_field("dropout:", "%g", c->lora_dropout);
	add_targets(&b, c);
	gm_cmd_print_field("target modules:", "%s", b.buf);
	if (c->n_rank_pattern) {
		gm_buf_reset(&b);
		add_patterns(&b, c->rank_pattern, c->n_rank_pattern);
		gm_cmd_print_field("rank pattern:", "%s", b.buf);
	}
	if (c->n_alpha_pattern) {
		gm_buf_reset(&b);
		add_patterns(&b, c->alpha_pattern, c->n_alpha_pattern);
		gm_cmd_print_field("alpha pattern:", "%s", b.buf);
	}
	n = collect_layers(ad, GM_PEFT_PROJ_COUNT, layers);
	gm_buf_reset(&b);
	add_ranges(&b, layers, n);
	gm_cmd_print_field("layers:", "%s (%zu layer%s)", b.buf, n, n == 1 ? "" : "s");
	gm_cmd_print_field("modules:", "%zu", ad->n_modules);
	print_projections(ad, layers);
	gm_buf_reset(&b);
	gm_st_dtype_mix(ad->st, dtype, sizeof(dtype));
	gm_cmd_print_field("tensors:", "%zu (%s)", gm_st_count(ad->st), dtype);
	gm_buf_reset(&b);
	gm_buf_add_human_count(&b, ad->n_params);
	gm_cmd_print_field("parameters:", "%s (%llu)", b.buf, (unsigned long long)ad->n_params);
	gm_buf_reset(&b);
	gm_buf_add_human_bytes(&b, ad->n_bytes);
	gm_cmd_print_field("size:", "%s (%llu bytes)", b.buf, (unsigned long long)ad->n_bytes);
	gm_buf_release(&b);
	free(layers);
}

static json_object *json_string_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static json_object *targets_json(const gm_peft_config *c)
{
	json_object *a;
	size_t i;

	/* a string in the config (a regex, "all-linear") stays a string */
	if (c->target_kind != GM_PEFT_TARGET_LIST)
		return json_object_new_string(c->target_modules[0]);
	a = json_object_new_array();
	for (i = 0; i < c->n_target_modules; i++)
		json_object_array_add(a, json_object_new_string(c->target_modules[i]));
	return a;
}

static json_object *patterns_json(const struct gm_peft_pattern *p, size_t n, int is_rank)
{
	json_object *o = json_object_new_object();
	size_t i;

	for (i = 0; i < n; i++)
		json_object_object_add(o, p[i].key, is_rank ? json_object_new_int64((int64_t)p[i].value)
						   : gm_json_new_double(p[i].value));
	return o;
}

static json_object *module_json(const gm_peft_module *m)
{
	json_object *o = json_object_new_object();
	double norm;

	json_object_object_add(o, "name", json_object_new_string(m->name));
	json_object_object_add(o, "layer", json_object_new_int(m->layer));
	json_object_object_add(o, "projection", json_object_new_string(gm_peft_proj_name(m->proj)));
	json_object_object_add(o, "in_features", json_object_new_int64(m->in));
	json_object_object_add(o, "out_features", json_object_new_int64(m->out));
	json_object_object_add(o, "rank", json_object_new_int64(m->rank));
	json_object_object_add(o, "alpha", gm_json_new_double(m->alpha));
	json_object_object_add(o, "scaling", gm_json_new_double(m->scale));
	if (!gm_peft_module_norm(m, &norm, NULL))
		json_object_object_add(o, "delta_norm", gm_json_new_double(norm));
	return o;
}

static void print_json(const gm_peft_adapter *ad)
{
	const gm_peft_config *c = &ad->config;
	json_object *o = json_object_new_object(), *a;
	int *layers = gm_xmalloc((ad->n_modules + 1) * sizeof(*layers));
	char dtype[64];
	size_t i, n;

	json_object_object_add(o, "path", json_object_new_string(ad->dir));
	json_object_object_add(o, "base_model", json_string_or_null(c->base_model));
	json_object_object_add(o, "task_type", json_string_or_null(c->task_type));
	json_object_object_add(o, "rank", json_object_new_int64(c->r));
	json_object_object_add(o, "alpha", gm_json_new_double(c->lora_alpha));
	json_object_object_add(o, "use_rslora", json_object_new_boolean(c->use_rslora));
	json_object_object_add(o, "scaling", gm_json_new_double(gm_peft_config_scale(c)));
	json_object_object_add(o, "dropout", gm_json_new_double(c->lora_dropout));
	json_object_object_add(o, "target_modules", targets_json(c));
	json_object_object_add(o, "rank_pattern", patterns_json(c->rank_pattern, c->n_rank_pattern, 1));
	json_object_object_add(o, "alpha_pattern",
			       patterns_json(c->alpha_pattern, c->n_alpha_pattern, 0));
	n = collect_layers(ad, GM_PEFT_PROJ_COUNT, layers);
	a = json_object_new_array();
	for (i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_int(layers[i]));
	json_object_object_add(o, "layers", a);
	a = json_object_new_array();
	for (i = 0; i < ad->n_modules; i++)
		json_object_array_add(a, module_json(&ad->modules[i]));
	json_object_object_add(o, "modules", a);
	json_object_object_add(o, "tensors", json_object_new_int64((int64_t)gm_st_count(ad->st)));
	gm_st_dtype_mix(ad->st, dtype, sizeof(dtype));
	json_object_object_add(o, "dtype", json_object_new_string(dtype));
	json_object_object_add(o, "parameters", json_object_new_int64((int64_t)ad->n_params));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)ad->n_bytes));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	free(layers);
}

/* ---------------------------------------------------------------- sparse adapters */

static void print_sparse_text(const gm_sparse_adapter *ad)
{
	gm_buf b = GM_BUF_INIT;
	size_t i;
	int p;

	gm_cmd_print_field("path:", "%s", ad->dir);
	gm_cmd_print_field("type:", "sparse delta (%s, %s)", GM_SPARSE_PEFT_TYPE, GM_SPARSE_FORMAT);
	gm_cmd_print_field("base model:", "%s", ad->base_model ? ad->base_model : "(not recorded)");
	if (ad->source)
		gm_cmd_print_field("source:", "%s (rank %lld, alpha %g, scaling %g)", ad->source,
				   (long long)ad->source_r, ad->source_alpha, ad->source_scale);
	else
		gm_cmd_print_field("source:", "(not recorded)");
	if (!isnan(ad->density))
		gm_cmd_print_field("density:", "%g", ad->density);
	gm_cmd_print_field("modules:", "%zu", ad->n_modules);
	for (p = 0; p < GM_PEFT_PROJ_COUNT; p++) {
		int64_t nnz = 0, cells = 0, in = 0, out = 0;
		double lo = INFINITY, hi = -INFINITY;
		size_t n = 0;

		for (i = 0; i < ad->n_modules; i++) {
			const gm_sparse_module *m = &ad->modules[i];

			if ((int)m->proj != p)
				continue;
			n++;
			nnz += m->nnz;
			cells += m->out * m->in;
			in = m->in;
			out = m->out;
			if (!isnan(m->norm_kept)) {
				lo = m->norm_kept < lo ? m->norm_kept : lo;
				hi = m->norm_kept > hi ? m->norm_kept : hi;
			}
		}
		if (!n)
			continue;
		gm_buf_reset(&b);
		if (lo <= hi)
			gm_buf_addf(&b, lo == hi ? ", norm kept %.4f" : ", norm kept %.4f-%.4f", lo, hi);
		printf("    %-10s %2zu layer%s  %lld -> %lld  nnz %lld (%.4g%%)%s\n",
		       gm_peft_proj_name((enum gm_peft_proj)p), n, n == 1 ? " " : "s", (long long)in,
		       (long long)out, (long long)nnz, 100.0 * (double)nnz / (double)cells, b.buf ? b.buf : "");
	}
	gm_buf_reset(&b);
	gm_buf_add_human_count(&b, ad->nnz);
	gm_cmd_print_field("nnz:", "%s (%llu)", b.buf, (unsigned long long)ad->nnz);
	if (!isnan(ad->norm_kept))
		gm_cmd_print_field("norm kept:", "%.6f of ||delta W||_F", ad->norm_kept);
	gm_buf_reset(&b);
	gm_buf_add_human_bytes(&b, ad->n_bytes);
	gm_cmd_print_field("size:", "%s (%llu bytes)", b.buf, (unsigned long long)ad->n_bytes);
	gm_buf_reset(&b);
	gm_buf_add_human_bytes(&b, ad->dense_bytes);
	gm_cmd_print_field("dense delta:", "%s (%llu bytes, f32)", b.buf, (unsigned long long)ad->dense_bytes);
	gm_buf_release(&b);
}

static json_object *double_or_null(double d)
{
	return isnan(d) ? NULL : gm_json_new_double(d);
}

static void print_sparse_json(const gm_sparse_adapter *ad)
{
	json_object *o = json_object_new_object(), *a = json_object_new_array();
	size_t i;

	json_object_object_add(o, "path", json_object_new_string(ad->dir));
	json_object_object_add(o, "peft_type", json_object_new_string(GM_SPARSE_PEFT_TYPE));
	json_object_object_add(o, "format", json_object_new_string(GM_SPARSE_FORMAT));
	json_object_object_add(o, "base_model", json_string_or_null(ad->base_model));
	json_object_object_add(o, "source", json_string_or_null(ad->source));
	json_object_object_add(o, "density", double_or_null(ad->density));
	json_object_object_add(o, "nnz", json_object_new_int64((int64_t)ad->nnz));
	json_object_object_add(o, "norm_kept", double_or_null(ad->norm_kept));
	for (i = 0; i < ad->n_modules; i++) {
		const gm_sparse_module *m = &ad->modules[i];
		json_object *jm = json_object_new_object();

		json_object_object_add(jm, "name", json_object_new_string(m->name));
		json_object_object_add(jm, "layer", json_object_new_int(m->layer));
		json_object_object_add(jm, "projection", json_object_new_string(gm_peft_proj_name(m->proj)));
		json_object_object_add(jm, "in_features", json_object_new_int64(m->in));
		json_object_object_add(jm, "out_features", json_object_new_int64(m->out));
		json_object_object_add(jm, "nnz", json_object_new_int64(m->nnz));
		json_object_object_add(jm, "norm_kept", double_or_null(m->norm_kept));
		json_object_array_add(a, jm);
	}
	json_object_object_add(o, "modules", a);
	json_object_object_add(o, "size", json_object_new_int64((int64_t)ad->n_bytes));
	json_object_object_add(o, "dense_size", json_object_new_int64((int64_t)ad->dense_bytes));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void add_ratio(gm_buf *b, uint64_t x, uint64_t y)
{
	gm_buf_add_human_bytes(b, x);
	gm_buf_addf(b, " (%llu bytes; %.4g%% of ", (unsigned long long)x, y ? 100.0 * (double)x / (double)y : 0.0);
}

/*
 * The adapter directory arg means: arg itself when it is a directory, else
 * an adapter of the model (-m, or the one holding the current directory).
 * 0, or an exit status after printing an error.
 */
static int adapter_dir(const char *model, const char *arg, char **dir)
{
	gm_error err = GM_ERROR_INIT;
	char *mdir;
	int ret;

	/* outside a model, a name is taken as a directory, and an error names it as one */
	if (gm_is_dir(arg) || strchr(arg, '/') || (!model && adapter_model_upwards(&mdir))) {
		*dir = gm_xstrdup(arg);
		return 0;
	}
	if (model && (ret = adapter_model_dir(model, &mdir)))
		return ret;
	ret = gm_adapter_resolve(mdir, arg, dir, &err) ? gm_cmd_error(&err) : 0;
	free(mdir);
	return ret;
}

static void print_sparsify_stats(const char *where, const gm_peft_adapter *ad, double density,
				 const gm_sparse_stats *st)
{
	gm_buf b = GM_BUF_INIT;

	gm_cmd_print_field("wrote:", "%s", where);
	gm_cmd_print_field("modules:", "%zu", ad->n_modules);
	gm_cmd_print_field("density:", "%g", density);
	gm_buf_add_human_count(&b, st->nnz);
	gm_cmd_print_field("nnz:", "%s (%llu)", b.buf, (unsigned long long)st->nnz);
	gm_cmd_print_field("norm kept:", "%.6f of ||delta W||_F (%.6g of %.6g)", st->norm_kept,
			   st->norm_kept * st->delta_norm, st->delta_norm);
	gm_buf_reset(&b);
	add_ratio(&b, st->file_bytes, st->dense_bytes);
	gm_cmd_print_field("size:", "%sthe dense delta, %.4g%% of the LoRA)", b.buf,
			   st->lora_bytes ? 100.0 * (double)st->file_bytes / (double)st->lora_bytes : 0.0);
	gm_buf_reset(&b);
	gm_buf_add_human_bytes(&b, st->dense_bytes);
	gm_cmd_print_field("dense delta:", "%s (%llu bytes, f32)", b.buf, (unsigned long long)st->dense_bytes);
	gm_buf_reset(&b);
	gm_buf_add_human_bytes(&b, st->lora_bytes);
	gm_cmd_print_field("lora:", "%s (%llu bytes)", b.buf, (unsigned long long)st->lora_bytes);
	gm_buf_release(&b);
}

/* Sparsifies into a scratch directory, then adds the result to the model as name. */
static int sparsify_into_model(const char *model, const char *src_arg, const gm_peft_adapter *ad, double density,
			       const char *name, int no_commit)
{
	gm_error err = GM_ERROR_INIT;
	gm_adapter_origin origin = { "sparsified", src_arg, NULL, NULL };
	gm_adapter_entry e;
	gm_sparse_stats st;
	gm_buf scratch = GM_BUF_INIT, msg = GM_BUF_INIT, nm = GM_BUF_INIT;
	const char *tmpdir = getenv("TMPDIR");
	char *mdir = NULL, *out = NULL;
	int ret;

	if ((ret = adapter_writable_model(model, &mdir)))
		return ret;
	if (!name) {
		const char *base = strrchr(ad->dir, '/');
		base = base ? base + 1 : ad->dir;
		/* adapters/NN_NAME: drop the index */
		while (*base >= '0' && *base <= '9')
			base++;
		if (*base == '_')
			base++;
		gm_buf_addf(&nm, "%s-d%g", base, density);
		name = nm.buf;
	}
	gm_buf_addf(&scratch, "%s/git-adapter-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(scratch.buf)) {
		gm_error_errno(&err, "cannot create a scratch directory %s", scratch.buf);
		ret = gm_cmd_error(&err);
		goto out;
	}
	out = gm_path_join(scratch.buf, "sparse");
	if (gm_adapter_name_check(name, &err) || gm_sparse_sparsify(ad, density, out, &st, &err) ||
	    gm_adapter_add(mdir, out, name, &origin, &e, &err)) {
		ret = gm_cmd_error(&err);
		goto out;
	}
	gm_buf_addf(&msg, "adapter: add %s, %s sparsified to density %g\n\nKept %.4f of the delta's norm "
		    "in %llu entries, as %s/%s.\n", e.name, src_arg, density, st.norm_kept,
		    (unsigned long long)st.nnz, GM_ADAPTER_DIR, e.dirname);
	{
		gm_buf where = GM_BUF_INIT;
		gm_buf_addf(&where, "%s/%s", GM_ADAPTER_DIR, e.dirname);
		print_sparsify_stats(where.buf, ad, density, &st);
		ret = adapter_record(mdir, no_commit, where.buf, NULL, msg.buf);
		gm_buf_release(&where);
	}
	gm_adapter_entry_release(&e);
out:
	if (*scratch.buf && gm_is_dir(scratch.buf))
		gm_remove_tree(scratch.buf, NULL);
	free(out);
	free(mdir);
	gm_buf_release(&scratch);
	gm_buf_release(&msg);
	gm_buf_release(&nm);
	return ret;
}

static int cmd_sparsify(int argc, const char **argv)
{
	double density = NAN;
	const char *out = NULL, *model = NULL, *name = NULL;
	int no_commit = 0, status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_DOUBLE(0, "density", &density, "d", "fraction of each module's entries to keep, in (0, 1]"),
		GM_OPT_STRING('o', "output", &out, "out", "write a new sparse adapter directory (must not exist)"),
		GM_OPT_STRING('m', "model", &model, "model", "the model (default: the one holding the current directory)"),
		GM_OPT_STRING(0, "name", &name, "name", "add the result to the model under this name "
			      "(default: <source>-d<density>)"),
		GM_OPT_FLAG(0, "no-commit", &no_commit, "change the files only, do not commit"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter sparsify", "git-adapter", sparsify_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_peft_adapter *ad;
	gm_sparse_stats st;
	char *src;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n == 0)
		return gm_cmd_usage_error(&cmd, "missing <name-or-dir>: the LoRA adapter to sparsify");
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: one adapter expected");
	if (isnan(density))
		return gm_cmd_usage_error(&cmd, "missing --density");
	if (!(density > 0 && density <= 1))
		return gm_cmd_usage_error(&cmd, "--density %g not in (0, 1]", density);
	if (out && (name || no_commit))
		return gm_cmd_usage_error(&cmd, "-o writes a directory: --name and --no-commit are for adding "
					  "the result to the model");
	if ((ret = adapter_dir(model, argv[0], &src)))
		return ret;
	if (gm_peft_open(src, &ad, &err)) {
		free(src);
		return gm_cmd_error(&err);
	}
	if (!out)
		ret = sparsify_into_model(model, argv[0], ad, density, name, no_commit);
	else if (gm_sparse_sparsify(ad, density, out, &st, &err))
		ret = gm_cmd_error(&err);
	else
		print_sparsify_stats(out, ad, density, &st);
	gm_peft_close(ad);
	free(src);
	return ret;
}

/*
 * The loss curve of a trained adapter (trainplot.h) as a sparkline:
 * "loss: 4.34 ▇▆▄▃▂▁ 1.95 (6 steps), eval 4.12 -> 1.87".  Nothing for an
 * adapter without a trace.
 */
static void print_training(const char *dir)
{
	char *path = gm_path_join(dir, GM_TRAINLOG_FILE);
	gm_trainlog log = GM_TRAINLOG_INIT;
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	double *v;
	size_t i;

	if (gm_is_file(path) && gm_trainlog_load(path, &log, &err))
		fprintf(stderr, "warning: %s\n", err.msg);
	if (log.n_loss) {
		v = gm_xcalloc(log.n_loss, sizeof(*v));
		for (i = 0; i < log.n_loss; i++)
			v[i] = log.loss[i].value;
		gm_buf_addf(&b, "%.4g ", v[0]);
		gm_sparkline(v, log.n_loss, 60, &b);
		gm_buf_addf(&b, " %.4g (%lld steps)", v[log.n_loss - 1], (long long)log.loss[log.n_loss - 1].step);
		free(v);
		gm_cmd_print_field("loss:", "%s", b.buf);
	}
	if (log.n_eval) {
		gm_buf_reset(&b);
		v = gm_xcalloc(log.n_eval, sizeof(*v));
		for (i = 0; i < log.n_eval; i++)
			v[i] = log.eval[i].value;
		gm_buf_addf(&b, "%.4g ", v[0]);
		gm_sparkline(v, log.n_eval, 60, &b);
		gm_buf_addf(&b, " %.4g (%zu evaluations)", v[log.n_eval - 1], log.n_eval);
		free(v);
		gm_cmd_print_field("eval loss:", "%s", b.buf);
	}
	gm_buf_release(&b);
	gm_trainlog_release(&log);
	free(path);
}

static int cmd_show(int argc, const char **argv)
{
	const char *model = NULL;
	int json = 0, status, n, ret;
	const struct gm_option options[] = {
		GM_OPT_STRING('m', "model", &model, "model", "the model whose adapter <name> is "
			      "(default: the one holding the current directory)"),
		GM_OPT_FLAG(0, "json", &json, "print one JSON object"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git adapter show", "git-adapter", show_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_peft_adapter *ad;
	char *dir;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n == 0)
		return gm_cmd_usage_error(&cmd, "missing <name-or-dir>: the adapter to describe");
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: one adapter expected");
	if ((ret = adapter_dir(model, argv[0], &dir)))
		return ret;
	if (gm_sparse_is_dir(dir)) {
		gm_sparse_adapter *sp;

		if (gm_sparse_open(dir, &sp, &err)) {
			free(dir);
			return gm_cmd_error(&err);
		}
		if (json)
			print_sparse_json(sp);
		else
			print_sparse_text(sp);
		gm_sparse_close(sp);
	} else if (gm_peft_open(dir, &ad, &err)) {
		free(dir);
		return gm_cmd_error(&err);
	} else {
		if (json) {
			print_json(ad);
		} else {
			print_text(ad);
			print_training(dir);
		}
		gm_peft_close(ad);
	}
	free(dir);
	return 0;
}

static const struct gm_option options[] = {
	GM_OPT_END()
};

static const struct gm_subcommand subcommands[] = {
	{ "list", cmd_list, "list the adapters of a model" },
	{ "show", cmd_show, "validate an adapter (of the model, or a directory) and describe it" },
	{ "add", cmd_add, "copy a PEFT adapter into the model after checking its shapes, and commit" },
	{ "rm", cmd_rm, "remove an adapter from the model, and commit" },
	{ "rename", cmd_rename, "rename an adapter (its index stays), and commit" },
	{ "export", cmd_export, "write an adapter as a plain PEFT directory" },
	{ "merge", cmd_merge, "fold adapters into the base weights, on a new branch or into a directory" },
	{ "sparsify", cmd_sparsify, "turn a LoRA into a sparse delta adapter" },
	{ NULL, NULL, NULL }
};

int main(int argc, const char **argv)
{
	static const struct gm_cmd_info cmd = { "git adapter", "git-adapter", usage, options };

	return gm_cmd_dispatch(&cmd, subcommands, argc, argv);
}
