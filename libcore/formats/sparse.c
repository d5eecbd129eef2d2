/*
 * sparse.c - sparse weight-delta adapters (see sparse.h).
 *
 * Sparsifying a module keeps the k entries of delta W of largest magnitude
 * without holding delta W: the magnitudes' f32 bit patterns order as the
 * magnitudes do, so a radix select over them finds the k-th largest in two
 * passes over delta W (a histogram of the high 16 bits, then of the low 16
 * bits within the bin that holds it), each recomputing delta W a block of
 * rows at a time; a third pass emits the kept entries in CSR order.  The
 * three passes compute every entry with the same operations in the same
 * order, so they agree bit for bit.
 */
#include "formats/sparse.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "formats/dtype.h"
#include "base/fs.h"
#include "base/json.h"

#define GM_SPARSE_BLOCK_ROWS 64
#define GM_SPARSE_PREFIX "base_model.model."

static const char *const part_names[3] = { "row_offsets", "col_indices", "values" };

static char *strfmt(const char *fmt, const char *a, const char *b)
{
	gm_buf buf;

	gm_buf_init(&buf);
	gm_buf_addf(&buf, fmt, a, b);
	return gm_buf_detach(&buf, NULL);
}

int gm_sparse_is_dir(const char *dir)
{
	char *p = gm_path_join(dir, GM_SPARSE_CONFIG_FILE);
	int r = gm_is_file(p);

	free(p);
	return r;
}

int64_t gm_sparse_keep_count(double density, int64_t n)
{
	double x = density * (double)n;
	int64_t k = (int64_t)ceil(x - x * 1e-12);

	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return k;
}

const gm_sparse_module *gm_sparse_find(const gm_sparse_adapter *ad, int layer, enum gm_peft_proj proj)
{
	size_t i;

	for (i = 0; i < ad->n_modules; i++)
		if (ad->modules[i].layer == layer && ad->modules[i].proj == proj)
			return &ad->modules[i];
	return NULL;
}

/* ---------------------------------------------------------------- checks */

int gm_sparse_check_csr(const char *what, int64_t out, int64_t in, const int64_t *row_offsets,
			const int32_t *col_indices, const float *values, int64_t nnz, gm_error *err)
{
	int64_t o, k;

	if (row_offsets[0] != 0)
		return gm_error_set(err, GM_EFORMAT, "%s: row_offsets[0] is %lld, not 0", what,
				    (long long)row_offsets[0]);
	for (o = 0; o < out; o++) {
		if (row_offsets[o + 1] < row_offsets[o])
			return gm_error_set(err, GM_EFORMAT, "%s: row_offsets decrease at row %lld (%lld, then %lld)",
					    what, (long long)o, (long long)row_offsets[o], (long long)row_offsets[o + 1]);
		if (row_offsets[o + 1] > nnz)
			return gm_error_set(err, GM_EFORMAT, "%s: row_offsets[%lld] is %lld, past nnz %lld", what,
					    (long long)(o + 1), (long long)row_offsets[o + 1], (long long)nnz);
	}
	if (row_offsets[out] != nnz)
		return gm_error_set(err, GM_EFORMAT, "%s: row_offsets end at %lld but there are %lld values", what,
				    (long long)row_offsets[out], (long long)nnz);
	for (o = 0; o < out; o++) {
		for (k = row_offsets[o]; k < row_offsets[o + 1]; k++) {
			if (col_indices[k] < 0 || col_indices[k] >= in)
				return gm_error_set(err, GM_EFORMAT, "%s: column index %ld of row %lld out of range "
						    "[0, %lld)", what, (long)col_indices[k], (long long)o, (long long)in);
			if (k > row_offsets[o] && col_indices[k] <= col_indices[k - 1])
				return gm_error_set(err, GM_EFORMAT, "%s: column indices of row %lld not strictly "
						    "increasing (%ld after %ld)", what, (long long)o,
						    (long)col_indices[k], (long)col_indices[k - 1]);
			if (!isfinite(values[k]))
				return gm_error_set(err, GM_EFORMAT, "%s: value %lld is not finite", what, (long long)k);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- reader */

static void module_release(gm_sparse_module *m)
{
	free(m->name);
	free(m->row_offsets);
	free(m->col_indices);
	free(m->values);
}

void gm_sparse_close(gm_sparse_adapter *ad)
{
	size_t i;

	if (!ad)
		return;
	for (i = 0; i < ad->n_modules; i++)
		module_release(&ad->modules[i]);
	free(ad->modules);
	free(ad->dir);
	free(ad->config_path);
	free(ad->weights_path);
	free(ad->source);
	free(ad->base_model);
	free(ad);
}

static int module_cmp(const void *pa, const void *pb)
{
	const gm_sparse_module *a = pa, *b = pb;

	if (a->layer != b->layer)
		return a->layer < b->layer ? -1 : 1;
	return (int)a->proj - (int)b->proj;
}

static int opt_string(json_object *o, const char *key, const char *what, char **out, gm_error *err)
{
	const char *s;
	int ret = gm_json_get_string(o, key, what, &s, err);

	if (ret == GM_ENOENT)
		return 0;
	if (ret)
		return ret;
	*out = gm_xstrdup(s);
	return 0;
}

static int parse_config(gm_sparse_adapter *ad, json_object *root, gm_error *err)
{
	const char *what = ad->config_path, *s;
	json_object *src, *mods;
	int ret;

	if (!json_object_is_type(root, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: not a JSON object", what);
	if ((ret = gm_json_get_string(root, "peft_type", what, &s, err)))
		return ret == GM_ENOENT ? gm_error_set(err, GM_EFORMAT, "%s: no peft_type", what) : ret;
	if (strcmp(s, GM_SPARSE_PEFT_TYPE))
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: peft_type '%s' is not '%s'", what, s,
				    GM_SPARSE_PEFT_TYPE);
	if ((ret = gm_json_get_string(root, "format", what, &s, err)))
		return ret == GM_ENOENT ? gm_error_set(err, GM_EFORMAT, "%s: no format", what) : ret;
	if (strcmp(s, GM_SPARSE_FORMAT))
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: format '%s' is not '%s'", what, s, GM_SPARSE_FORMAT);
	ad->density = NAN;
	ad->norm_kept = NAN;
	ad->delta_norm = NAN;
	ad->source_alpha = NAN;
	ad->source_scale = NAN;
	if ((ret = gm_json_opt_double(root, "density", what, &ad->density, err)) ||
	    (ret = gm_json_opt_double(root, "norm_kept", what, &ad->norm_kept, err)) ||
	    (ret = gm_json_opt_double(root, "delta_norm", what, &ad->delta_norm, err)) ||
	    (ret = opt_string(root, "base_model_name_or_path", what, &ad->base_model, err)))
		return ret;
	if (!isnan(ad->density) && !(ad->density > 0 && ad->density <= 1))
		return gm_error_set(err, GM_EFORMAT, "%s: density %g not in (0, 1]", what, ad->density);
	if (json_object_object_get_ex(root, "source", &src) && json_object_is_type(src, json_type_object)) {
		if ((ret = opt_string(src, "path", what, &ad->source, err)) ||
		    (ret = gm_json_opt_int64(src, "r", what, &ad->source_r, err)) ||
		    (ret = gm_json_opt_double(src, "lora_alpha", what, &ad->source_alpha, err)) ||
		    (ret = gm_json_opt_double(src, "scale", what, &ad->source_scale, err)) ||
		    (ret = gm_json_opt_bool(src, "use_rslora", what, &ad->source_rslora, err)))
			return ret;
	}
	if (!json_object_object_get_ex(root, "modules", &mods) || !json_object_is_type(mods, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: no \"modules\" object", what);
	ad->modules = gm_xcalloc((size_t)json_object_object_length(mods) + 1, sizeof(*ad->modules));
	json_object_object_foreach(mods, key, val) {
		gm_sparse_module *m = &ad->modules[ad->n_modules];
		json_object *shape;
		int64_t nnz = -1;
		size_t i;

		m->name = gm_xstrdup(key);
		m->norm_kept = NAN;
		m->delta_norm = NAN;
		ad->n_modules++;
		if ((ret = gm_peft_parse_module_name(key, &m->layer, &m->proj, err)))
			return gm_error_prefix(err, "%s", what);
		for (i = 0; i + 1 < ad->n_modules; i++)
			if (ad->modules[i].layer == m->layer && ad->modules[i].proj == m->proj)
				return gm_error_set(err, GM_EFORMAT, "%s: module %s appears twice", what, key);
		if (!json_object_is_type(val, json_type_object) ||
		    !json_object_object_get_ex(val, "shape", &shape) ||
		    !json_object_is_type(shape, json_type_array) || json_object_array_length(shape) != 2 ||
		    !gm_json_is_integer(json_object_array_get_idx(shape, 0)) ||
		    !gm_json_is_integer(json_object_array_get_idx(shape, 1)))
			return gm_error_set(err, GM_EFORMAT, "%s: module %s: no \"shape\": [out, in]", what, key);
		m->out = json_object_get_int64(json_object_array_get_idx(shape, 0));
		m->in = json_object_get_int64(json_object_array_get_idx(shape, 1));
		/* out + 1 row offsets and out * in must not overflow (a fuzz-sparse finding) */
		if (m->out <= 0 || m->in <= 0 || m->in > INT32_MAX || m->out > INT32_MAX)
			return gm_error_set(err, GM_EFORMAT, "%s: module %s: bad shape [%lld, %lld]", what, key,
					    (long long)m->out, (long long)m->in);
		if ((ret = gm_json_opt_int64(val, "nnz", what, &nnz, err)) ||
		    (ret = gm_json_opt_double(val, "norm_kept", what, &m->norm_kept, err)) ||
		    (ret = gm_json_opt_double(val, "delta_norm", what, &m->delta_norm, err)))
			return ret;
		m->nnz = nnz;
	}
	if (!ad->n_modules)
		return gm_error_set(err, GM_EFORMAT, "%s: no modules", what);
	return 0;
}

/* Splits "base_model.model.MODULE.delta.PART"; the part's index or -1. */
static int tensor_part(const char *name, char *module, size_t n)
{
	size_t lp = strlen(GM_SPARSE_PREFIX), len = strlen(name);
	int p;

	if (strncmp(name, GM_SPARSE_PREFIX, lp))
		return -1;
	for (p = 0; p < 3; p++) {
		size_t ls = strlen(part_names[p]) + 7; /* ".delta." */

		if (len > lp + ls && !strncmp(name + len - ls, ".delta.", 7) &&
		    !strcmp(name + len - ls + 7, part_names[p])) {
			if (len - ls - lp >= n)
				return -1;
			memcpy(module, name + lp, len - ls - lp);
			module[len - ls - lp] = 0;
			return p;
		}
	}
	return -1;
}

static int load_module(gm_sparse_adapter *ad, gm_st_file *st, gm_sparse_module *m, gm_error *err)
{
	const gm_tensor *t[3];
	char *what;
	int p, ret = 0;
	int64_t o;

	for (p = 0; p < 3; p++) {
		char *name = strfmt(GM_SPARSE_PREFIX "%s.delta.%s", m->name, part_names[p]);

		t[p] = gm_st_find(st, name);
		free(name);
		if (!t[p])
			return gm_error_set(err, GM_EFORMAT, "%s: module %s has no delta.%s tensor", ad->weights_path,
					    m->name, part_names[p]);
		if (t[p]->ndim != 1)
			return gm_error_set(err, GM_EFORMAT, "%s: %s is %d-D, not 1-D", ad->weights_path,
					    t[p]->name, t[p]->ndim);
	}
	if (t[0]->dtype != GM_DTYPE_I64 && t[0]->dtype != GM_DTYPE_I32)
		return gm_error_set(err, GM_EFORMAT, "%s: %s is %s, not I64 or I32", ad->weights_path, t[0]->name,
				    gm_dtype_name(t[0]->dtype));
	if (t[1]->dtype != GM_DTYPE_I32)
		return gm_error_set(err, GM_EFORMAT, "%s: %s is %s, not I32", ad->weights_path, t[1]->name,
				    gm_dtype_name(t[1]->dtype));
	if (t[2]->dtype != GM_DTYPE_F32)
		return gm_error_set(err, GM_EFORMAT, "%s: %s is %s, not F32", ad->weights_path, t[2]->name,
				    gm_dtype_name(t[2]->dtype));
	if (t[0]->shape[0] != m->out + 1)
		return gm_error_set(err, GM_EFORMAT, "%s: %s has %lld entries, expected out + 1 = %lld",
				    ad->weights_path, t[0]->name, (long long)t[0]->shape[0], (long long)(m->out + 1));
	if (t[1]->shape[0] != t[2]->shape[0])
		return gm_error_set(err, GM_EFORMAT, "%s: module %s: %lld column indices but %lld values",
				    ad->weights_path, m->name, (long long)t[1]->shape[0], (long long)t[2]->shape[0]);
	if (m->nnz >= 0 && m->nnz != t[2]->shape[0])
		return gm_error_set(err, GM_EFORMAT, "%s: module %s: %lld values but the config says nnz %lld",
				    ad->weights_path, m->name, (long long)t[2]->shape[0], (long long)m->nnz);
	m->nnz = t[2]->shape[0];
	if (m->nnz > m->out * m->in)
		return gm_error_set(err, GM_EFORMAT, "%s: module %s: %lld values for a [%lld, %lld] matrix",
				    ad->weights_path, m->name, (long long)m->nnz, (long long)m->out, (long long)m->in);
	m->row_offsets = gm_xmalloc((size_t)(m->out + 1) * sizeof(int64_t));
	if (t[0]->dtype == GM_DTYPE_I64) {
		memcpy(m->row_offsets, t[0]->data, (size_t)(m->out + 1) * sizeof(int64_t));
	} else {
		for (o = 0; o <= m->out; o++) {
			int32_t v;

			memcpy(&v, (const char *)t[0]->data + o * 4, 4);
			m->row_offsets[o] = v;
		}
	}
	m->col_indices = gm_xmalloc((size_t)(m->nnz ? m->nnz : 1) * sizeof(int32_t));
	m->values = gm_xmalloc((size_t)(m->nnz ? m->nnz : 1) * sizeof(float));
	memcpy(m->col_indices, t[1]->data, (size_t)m->nnz * 4);
	memcpy(m->values, t[2]->data, (size_t)m->nnz * 4);
	what = strfmt("%s: %s", ad->weights_path, m->name);
	ret = gm_sparse_check_csr(what, m->out, m->in, m->row_offsets, m->col_indices, m->values, m->nnz, err);
	free(what);
	ad->n_bytes += t[0]->nbytes + t[1]->nbytes + t[2]->nbytes;
	return ret;
}

int gm_sparse_open(const char *dir, gm_sparse_adapter **out, gm_error *err)
{
	gm_sparse_adapter *ad = gm_xcalloc(1, sizeof(*ad));
	json_object *root = NULL;
	gm_st_file *st = NULL;
	char module[512];
	size_t i;
	int ret;

	ad->dir = gm_xstrdup(dir);
	ad->config_path = gm_path_join(dir, GM_SPARSE_CONFIG_FILE);
	ad->weights_path = gm_path_join(dir, GM_SPARSE_WEIGHTS_FILE);
	if (!gm_is_file(ad->config_path)) {
		ret = gm_error_set(err, GM_ENOENT, "%s: no %s (not a sparse adapter directory)", dir,
				   GM_SPARSE_CONFIG_FILE);
		goto out;
	}
	if ((ret = gm_json_parse_file(ad->config_path, &root, err)) || (ret = parse_config(ad, root, err)))
		goto out;
	if ((ret = gm_st_open(ad->weights_path, &st, err)))
		goto out;
	/* every tensor is a part of a configured module */
	for (i = 0; i < gm_st_count(st); i++) {
		const gm_tensor *t = gm_st_tensor(st, i);
		size_t k;

		if (tensor_part(t->name, module, sizeof(module)) < 0) {
			ret = gm_error_set(err, GM_EFORMAT, "%s: tensor '%s' is not a sparse delta (expected "
					   GM_SPARSE_PREFIX "MODULE.delta.{row_offsets,col_indices,values})",
					   ad->weights_path, t->name);
			goto out;
		}
		for (k = 0; k < ad->n_modules && strcmp(ad->modules[k].name, module); k++)
			;
		if (k == ad->n_modules) {
			ret = gm_error_set(err, GM_EFORMAT, "%s: tensor '%s' belongs to module %s, which %s does "
					   "not list", ad->weights_path, t->name, module, ad->config_path);
			goto out;
		}
	}
	for (i = 0; i < ad->n_modules; i++) {
		if ((ret = load_module(ad, st, &ad->modules[i], err)))
			goto out;
		ad->nnz += (uint64_t)ad->modules[i].nnz;
		ad->dense_bytes += (uint64_t)(ad->modules[i].out * ad->modules[i].in) * 4;
	}
	qsort(ad->modules, ad->n_modules, sizeof(*ad->modules), module_cmp);
out:
	gm_st_close(st);
	if (root)
		json_object_put(root);
	if (ret) {
		gm_sparse_close(ad);
		return ret;
	}
	*out = ad;
	return 0;
}

/* ---------------------------------------------------------------- sparsify */

void gm_sparse_delta_rows(const float *a, const float *b, int64_t r, int64_t in, float scale, int64_t r0,
			  int64_t r1, float *d)
{
	int64_t o, k, c;

	for (o = r0; o < r1; o++) {
		float *row = d + (o - r0) * in;

		memset(row, 0, (size_t)in * sizeof(float));
		for (k = 0; k < r; k++) {
			float bk = scale * b[o * r + k];
			const float *ak = a + k * in;

			for (c = 0; c < in; c++)
				row[c] += bk * ak[c];
		}
	}
}

static inline uint32_t mag_bits(float v)
{
	uint32_t u;

	memcpy(&u, &v, 4);
	return u & 0x7fffffffu;
}

struct sp_out {
	char *name[3];
	int64_t shape[3];
	int64_t *rowp;
	int32_t *cols;
	float *vals;
};

/* One module: the top k of delta W into o; sums of squares kept and in all. */
static int sparsify_module(const gm_peft_module *md, double density, struct sp_out *o, double *kept2,
			   double *all2, gm_error *err)
{
	int64_t out = md->out, in = md->in, r = md->rank, n = out * in, k, r0, i, nn, need, ties;
	float *a = gm_xmalloc((size_t)(r * in) * sizeof(float)), *b = gm_xmalloc((size_t)(out * r) * sizeof(float));
	float *blk = gm_xmalloc((size_t)(GM_SPARSE_BLOCK_ROWS * in) * sizeof(float));
	uint64_t *hist = gm_xcalloc(65536, sizeof(uint64_t)), above = 0, cum;
	uint32_t hi = 0, lo = 0, thr;
	double s2 = 0, k2 = 0;
	int ret;

	if ((ret = gm_dtype_to_f32(md->a->dtype, md->a->data, a, (size_t)(r * in), err)) ||
	    (ret = gm_dtype_to_f32(md->b->dtype, md->b->data, b, (size_t)(out * r), err)))
		goto out;
	k = gm_sparse_keep_count(density, n);

	/* pass 1: the high halves */
	for (r0 = 0; r0 < out; r0 += GM_SPARSE_BLOCK_ROWS) {
		nn = (out - r0 < GM_SPARSE_BLOCK_ROWS ? out - r0 : GM_SPARSE_BLOCK_ROWS) * in;
		gm_sparse_delta_rows(a, b, r, in, (float)md->scale, r0, r0 + nn / in, blk);
		for (i = 0; i < nn; i++) {
			if (!isfinite(blk[i])) {
				ret = gm_error_set(err, GM_EINVAL, "%s: delta W has a non-finite entry",
						   md->name);
				goto out;
			}
			hist[mag_bits(blk[i]) >> 16]++;
			s2 += (double)blk[i] * (double)blk[i];
		}
	}
	for (cum = 0, i = 65535; i >= 0; i--) {
		if (cum + hist[i] >= (uint64_t)k) {
			hi = (uint32_t)i;
			break;
		}
		cum += hist[i];
	}
	above = cum;
	/* pass 2: the low halves within bin hi */
	memset(hist, 0, 65536 * sizeof(uint64_t));
	for (r0 = 0; r0 < out; r0 += GM_SPARSE_BLOCK_ROWS) {
		nn = (out - r0 < GM_SPARSE_BLOCK_ROWS ? out - r0 : GM_SPARSE_BLOCK_ROWS) * in;
		gm_sparse_delta_rows(a, b, r, in, (float)md->scale, r0, r0 + nn / in, blk);
		for (i = 0; i < nn; i++) {
			uint32_t u = mag_bits(blk[i]);

			if (u >> 16 == hi)
				hist[u & 0xffff]++;
		}
	}
	for (cum = above, i = 65535; i >= 0; i--) {
		if (cum + hist[i] >= (uint64_t)k) {
			lo = (uint32_t)i;
			break;
		}
		cum += hist[i];
	}
	thr = hi << 16 | lo;
	need = k;
	ties = k - (int64_t)cum; /* entries equal to the threshold to keep, first ones first */
	/* pass 3: emit */
	o->rowp = gm_xmalloc((size_t)(out + 1) * sizeof(int64_t));
	o->cols = gm_xmalloc((size_t)k * sizeof(int32_t));
	o->vals = gm_xmalloc((size_t)k * sizeof(float));
	nn = 0;
	o->rowp[0] = 0;
	for (r0 = 0; r0 < out; r0 += GM_SPARSE_BLOCK_ROWS) {
		int64_t rows = out - r0 < GM_SPARSE_BLOCK_ROWS ? out - r0 : GM_SPARSE_BLOCK_ROWS, t, c;

		gm_sparse_delta_rows(a, b, r, in, (float)md->scale, r0, r0 + rows, blk);
		for (t = 0; t < rows; t++) {
			for (c = 0; c < in; c++) {
				float v = blk[t * in + c];
				uint32_t u = mag_bits(v);

				if (u > thr || (u == thr && ties > 0)) {
					if (u == thr)
						ties--;
					o->cols[nn] = (int32_t)c;
					o->vals[nn] = v;
					k2 += (double)v * (double)v;
					nn++;
				}
			}
			o->rowp[r0 + t + 1] = nn;
		}
	}
	if (nn != need) {
		ret = gm_error_set(err, GM_ERROR, "%s: kept %lld entries, expected %lld", md->name, (long long)nn,
				   (long long)need);
		goto out;
	}
	o->shape[0] = out + 1;
	o->shape[1] = k;
	o->shape[2] = k;
	*kept2 = k2;
	*all2 = s2;
out:
	free(a);
	free(b);
	free(blk);
	free(hist);
	return ret;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_size;
}

int gm_sparse_sparsify(const gm_peft_adapter *src, double density, const char *out_dir, gm_sparse_stats *stats,
		       gm_error *err)
{
	struct sp_out *so = gm_xcalloc(src->n_modules ? src->n_modules : 1, sizeof(*so));
	json_object *root = NULL, *mods, *jsrc;
	gm_st_writer *w = NULL;
	gm_sparse_stats st;
	char *tmp = NULL, *path = NULL;
	double kept_all = 0, all_all = 0;
	size_t i;
	int p, ret = 0;
	struct stat sb;

	memset(&st, 0, sizeof(st));
	if (!(density > 0 && density <= 1)) {
		ret = gm_error_set(err, GM_EINVAL, "density %g not in (0, 1]", density);
		goto out;
	}
	if (!lstat(out_dir, &sb)) {
		ret = gm_error_set(err, GM_EINVAL, "%s already exists", out_dir);
		goto out;
	}
	root = json_object_new_object();
	mods = json_object_new_object();
	w = gm_st_writer_new();
	for (i = 0; i < src->n_modules && !ret; i++) {
		const gm_peft_module *md = &src->modules[i];
		json_object *jm = json_object_new_object(), *shape = json_object_new_array();
		double k2 = 0, a2 = 0;

		if ((ret = sparsify_module(md, density, &so[i], &k2, &a2, err))) {
			json_object_put(jm);
			json_object_put(shape);
			break;
		}
		for (p = 0; p < 3 && !ret; p++) {
			so[i].name[p] = strfmt(GM_SPARSE_PREFIX "%s.delta.%s", md->name, part_names[p]);
			ret = gm_st_writer_add(w, so[i].name[p],
					       p == 0 ? GM_DTYPE_I64 : p == 1 ? GM_DTYPE_I32 : GM_DTYPE_F32, 1,
					       &so[i].shape[p],
					       p == 0 ? (const void *)so[i].rowp : p == 1 ? (const void *)so[i].cols
					       : (const void *)so[i].vals, err);
		}
		json_object_array_add(shape, json_object_new_int64(md->out));
		json_object_array_add(shape, json_object_new_int64(md->in));
		json_object_object_add(jm, "shape", shape);
		json_object_object_add(jm, "nnz", json_object_new_int64(so[i].shape[2]));
		json_object_object_add(jm, "norm_kept", gm_json_new_double(a2 > 0 ? sqrt(k2 / a2) : 1.0));
		json_object_object_add(jm, "delta_norm", gm_json_new_double(sqrt(a2)));
		json_object_object_add(jm, "r", json_object_new_int64(md->rank));
		json_object_object_add(jm, "scale", gm_json_new_double(md->scale));
		json_object_object_add(mods, md->name, jm);
		kept_all += k2;
		all_all += a2;
		st.nnz += (uint64_t)so[i].shape[2];
		st.dense_bytes += (uint64_t)(md->out * md->in) * 4;
	}
	if (ret) {
		json_object_put(mods);
		goto out;
	}
	st.norm_kept = all_all > 0 ? sqrt(kept_all / all_all) : 1.0;
	st.delta_norm = sqrt(all_all);
	json_object_object_add(root, "peft_type", json_object_new_string(GM_SPARSE_PEFT_TYPE));
	json_object_object_add(root, "format", json_object_new_string(GM_SPARSE_FORMAT));
	json_object_object_add(root, "density", gm_json_new_double(density));
	json_object_object_add(root, "nnz", json_object_new_int64((int64_t)st.nnz));
	json_object_object_add(root, "values_dtype", json_object_new_string("F32"));
	json_object_object_add(root, "row_offsets_dtype", json_object_new_string("I64"));
	json_object_object_add(root, "norm_kept", gm_json_new_double(st.norm_kept));
	json_object_object_add(root, "delta_norm", gm_json_new_double(st.delta_norm));
	if (src->config.base_model)
		json_object_object_add(root, "base_model_name_or_path",
				       json_object_new_string(src->config.base_model));
	jsrc = json_object_new_object();
	json_object_object_add(jsrc, "path", json_object_new_string(src->dir));
	json_object_object_add(jsrc, "peft_type", json_object_new_string(src->config.peft_type));
	if (src->config.base_model)
		json_object_object_add(jsrc, "base_model_name_or_path",
				       json_object_new_string(src->config.base_model));
	json_object_object_add(jsrc, "r", json_object_new_int64(src->config.r));
	json_object_object_add(jsrc, "lora_alpha", gm_json_new_double(src->config.lora_alpha));
	json_object_object_add(jsrc, "use_rslora", json_object_new_boolean(src->config.use_rslora));
	json_object_object_add(jsrc, "scale", gm_json_new_double(gm_peft_config_scale(&src->config)));
	json_object_object_add(root, "source", jsrc);
	json_object_object_add(root, "modules", mods);
	if ((ret = gm_st_writer_set_metadata(w, "format", "pt", err)) ||
	    (ret = gm_st_writer_set_metadata(w, "peft_type", GM_SPARSE_PEFT_TYPE, err)))
		goto out;

	/* a temporary directory beside out_dir, renamed when complete */
	tmp = strfmt("%s.tmp-%s", out_dir, "XXXXXX");
	if (!mkdtemp(tmp)) {
		ret = gm_error_errno(err, "cannot create %s", tmp);
		free(tmp);
		tmp = NULL;
		goto out;
	}
	{
		mode_t mask = umask(0);

		umask(mask);
		chmod(tmp, 0777 & ~mask); /* mkdtemp made it 0700 */
	}
	path = gm_path_join(tmp, GM_SPARSE_WEIGHTS_FILE);
	if ((ret = gm_st_writer_write(w, path, err)))
		goto out;
	st.file_bytes = file_size(path);
	free(path);
	path = gm_path_join(tmp, GM_SPARSE_CONFIG_FILE);
	if ((ret = gm_json_write_file(path, root, err)))
		goto out;
	if (!lstat(out_dir, &sb)) {
		ret = gm_error_set(err, GM_EINVAL, "%s already exists", out_dir);
		goto out;
	}
	if (rename(tmp, out_dir)) {
		ret = gm_error_errno(err, "cannot rename %s to %s", tmp, out_dir);
		goto out;
	}
	free(tmp);
	tmp = NULL;
	st.lora_bytes = file_size(src->weights_path);
	if (stats)
		*stats = st;
out:
	if (tmp) {
		char *f = gm_path_join(tmp, GM_SPARSE_WEIGHTS_FILE);

		unlink(f);
		free(f);
		f = gm_path_join(tmp, GM_SPARSE_CONFIG_FILE);
		unlink(f);
		free(f);
		rmdir(tmp);
		free(tmp);
	}
	free(path);
	for (i = 0; i < src->n_modules; i++) {
		for (p = 0; p < 3; p++)
			free(so[i].name[p]);
		free(so[i].rowp);
		free(so[i].cols);
		free(so[i].vals);
	}
	free(so);
	gm_st_writer_free(w);
	if (root)
		json_object_put(root);
	return ret;
}
