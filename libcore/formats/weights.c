/*
 * weights.c - a model's tensors from model.safetensors or from the shards
 * named by model.safetensors.index.json.
 *
 * Every shard is opened and validated up front (the headers are small and
 * the data is only mapped), so an inconsistent checkpoint fails at open
 * time, naming the index, the shard and the tensor, rather than later in
 * the middle of a computation.
 */
#include "formats/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sysmem.h"

#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME "model.safetensors.index.json"

struct entry {
	const gm_tensor *t;
	size_t file;
};

struct gm_weights {
	gm_gguf *gguf;         /* a GGUF file (then files[0] is NULL) */
	gm_tensor *renamed;    /* its tensors under transformers' names */
	size_t nrenamed;
	void **owned;          /* data made here (un-permuted q/k rows) */
	size_t nowned;
	gm_st_file **files;
	char **paths; /* full path of each file, as gm_st_path */
	size_t nfiles;
	struct entry *entries; /* sorted by name */
	size_t n;
	uint64_t total;
	enum gm_weights_mode mode; /* as asked; open_files resolves it */
};

void gm_weights_close(gm_weights *w)
{
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->nrenamed; i++)
		free((char *)w->renamed[i].name);
	free(w->renamed);
	for (i = 0; i < w->nowned; i++)
		free(w->owned[i]);
	free(w->owned);
	gm_gguf_close(w->gguf);
	for (i = 0; i < w->nfiles; i++) {
		gm_st_close(w->files[i]);
		free(w->paths[i]);
	}
	free(w->files);
	free(w->paths);
	free(w->entries);
	free(w);
}

static size_t add_file(gm_weights *w, const char *path)
{
	w->files = gm_xrealloc(w->files, (w->nfiles + 1) * sizeof(*w->files));
	w->paths = gm_xrealloc(w->paths, (w->nfiles + 1) * sizeof(*w->paths));
	w->files[w->nfiles] = NULL;
	w->paths[w->nfiles] = gm_xstrdup(path);
	return w->nfiles++;
}

static enum gm_st_load choose_load(const gm_weights *w, enum gm_weights_mode mode);

static int open_files(gm_weights *w, gm_error *err)
{
	enum gm_st_load load = choose_load(w, w->mode);
	size_t i;
	int ret;

	for (i = 0; i < w->nfiles; i++) {
		ret = gm_st_open_mode(w->paths[i], load, &w->files[i], err);
		if (ret)
			return ret;
	}
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->t->name, ((const struct entry *)b)->t->name);
}

/* Collects every tensor of every file, sorted by name; a name in two files
 * would make the checkpoint ambiguous. */
static int collect(gm_weights *w, gm_error *err)
{
	size_t i, j, n = 0;

	for (i = 0; i < w->nfiles; i++)
		n += gm_st_count(w->files[i]);
	w->entries = gm_xcalloc(n ? n : 1, sizeof(*w->entries));
	for (i = 0; i < w->nfiles; i++) {
		for (j = 0; j < gm_st_count(w->files[i]); j++) {
			struct entry *e = &w->entries[w->n++];
			e->t = gm_st_tensor(w->files[i], j);
			e->file = i;
			w->total += e->t->nbytes;
		}
	}
	qsort(w->entries, w->n, sizeof(*w->entries), cmp_entry);
	for (i = 1; i < w->n; i++) {
		const struct entry *a = &w->entries[i - 1], *b = &w->entries[i];
		if (!strcmp(a->t->name, b->t->name)) {
			/* Name them in file order for a stable message. */
			if (a->file > b->file) {
				const struct entry *x = a;
				a = b;
				b = x;
			}
			return gm_error_set(err, GM_EFORMAT, "tensor '%s' is in two shards: '%s' and '%s'",
					    a->t->name, w->paths[a->file], w->paths[b->file]);
		}
	}
	return 0;
}

/* Shard names come from a file anyone may have written: keep them inside dir. */
static int check_shard_name(const char *index, const char *tensor, const char *shard, gm_error *err)
{
	if (!*shard || strchr(shard, '/') || strstr(shard, "..") || !strcmp(shard, "."))
		return gm_error_set(err, GM_EFORMAT,
				    "%s: tensor '%s' maps to shard '%s', which is not a plain file name in the model directory",
				    index, tensor, shard);
	return 0;
}

static size_t find_path(const gm_weights *w, const char *path)
{
	size_t i;

	for (i = 0; i < w->nfiles; i++)
		if (!strcmp(w->paths[i], path))
			return i;
	return w->nfiles;
}

/* Registers each distinct shard of the weight map, in order of first use. */
static int add_shards(gm_weights *w, const char *dir, const char *index, json_object *map, gm_error *err)
{
	json_object_object_foreach(map, tensor, val)
	{
		const char *shard;
		char *path;
		int ret;

		if (!json_object_is_type(val, json_type_string))
			return gm_error_set(err, GM_EFORMAT, "%s: weight_map '%s' must be a file name (a string), not %s",
					    index, tensor, json_type_to_name(json_object_get_type(val)));
		shard = json_object_get_string(val);
		ret = check_shard_name(index, tensor, shard, err);
		if (ret)
			return ret;
		path = gm_path_join(dir, shard);
		if (find_path(w, path) == w->nfiles)
			add_file(w, path);
		free(path);
	}
	return 0;
}

/* Every tensor the index names must be in the shard it names. */
static int check_index(gm_weights *w, const char *dir, const char *index, json_object *map, gm_error *err)
{
	json_object_object_foreach(map, tensor, val)
	{
		char *path = gm_path_join(dir, json_object_get_string(val));
		size_t i = find_path(w, path);
		const gm_tensor *t = i < w->nfiles ? gm_st_find(w->files[i], tensor) : NULL;

		free(path);
		if (!t)
			return gm_error_set(err, GM_EFORMAT, "%s: tensor '%s' is listed in shard '%s' but missing from it",
					    index, tensor, json_object_get_string(val));
	}
	return 0;
}

static int open_index(gm_weights *w, const char *dir, const char *index, gm_error *err)
{
	json_object *root = NULL, *map = NULL;
	int ret = gm_json_parse_file(index, &root, err);

	if (ret)
		return ret;
	if (!json_object_is_type(root, json_type_object))
		ret = gm_error_set(err, GM_EFORMAT, "%s: must be a JSON object, not %s", index,
				   json_type_to_name(json_object_get_type(root)));
	else if (!json_object_object_get_ex(root, "weight_map", &map) || !map)
		ret = gm_error_set(err, GM_EFORMAT, "%s: missing 'weight_map'", index);
	else if (!json_object_is_type(map, json_type_object))
		ret = gm_error_set(err, GM_EFORMAT, "%s: 'weight_map' must be an object (tensor -> file), not %s",
				   index, json_type_to_name(json_object_get_type(map)));
	else if (!json_object_object_length(map))
		ret = gm_error_set(err, GM_EFORMAT, "%s: 'weight_map' lists no tensors", index);
	if (!ret)
		ret = add_shards(w, dir, index, map, err);
	if (!ret)
		ret = open_files(w, err);
	if (!ret)
		ret = collect(w, err);
	if (!ret)
		ret = check_index(w, dir, index, map, err);
	json_object_put(root);
	return ret;
}

/* Transparent huge pages can back an madvise'd region: "[always]" or "[madvise]". */
static int thp_usable(void)
{
	char buf[128];
	FILE *fp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	size_t n;

	if (!fp)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = 0;
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

/* Sum of the files' sizes (before opening them). */
static uint64_t files_size(const gm_weights *w)
{
	uint64_t sum = 0;
	struct stat st;
	size_t i;

	for (i = 0; i < w->nfiles; i++)
		if (!stat(w->paths[i], &st))
			sum += (uint64_t)st.st_size;
	return sum;
}

static enum gm_st_load choose_load(const gm_weights *w, enum gm_weights_mode mode)
{
	const char *env = getenv("GM_WEIGHTS");
	uint64_t avail;

	if (mode == GM_WEIGHTS_AUTO && env && !strcmp(env, "mmap"))
		mode = GM_WEIGHTS_MMAP;
	else if (mode == GM_WEIGHTS_AUTO && env && !strcmp(env, "resident"))
		mode = GM_WEIGHTS_RESIDENT;
	if (mode == GM_WEIGHTS_MMAP)
		return GM_ST_LOAD_MAP;
	if (mode == GM_WEIGHTS_RESIDENT)
		return GM_ST_LOAD_RESIDENT;
	/*
	 * A copy that would crowd out the rest of memory is worse than 4 KiB
	 * pages: the page cache can drop pages of a mapping, not of a copy.
	 */
	if (!thp_usable())
		return GM_ST_LOAD_MAP;
	avail = gm_mem_available();
	return avail && files_size(w) <= avail / 2 ? GM_ST_LOAD_RESIDENT : GM_ST_LOAD_MAP;
}

/* ------------------------------------------------------------------ GGUF */

/* llama.cpp's tensor names (per layer: blk.N.SUFFIX) and transformers'. */
static const struct {
	const char *gguf, *hf;
} gguf_layer_names[] = {
	{ "attn_norm.weight", "input_layernorm.weight" },
	{ "attn_q.weight", "self_attn.q_proj.weight" },
	{ "attn_k.weight", "self_attn.k_proj.weight" },
	{ "attn_v.weight", "self_attn.v_proj.weight" },
	{ "attn_q.bias", "self_attn.q_proj.bias" },
	{ "attn_k.bias", "self_attn.k_proj.bias" },
	{ "attn_v.bias", "self_attn.v_proj.bias" },
	{ "attn_output.weight", "self_attn.o_proj.weight" },
	{ "attn_q_norm.weight", "self_attn.q_norm.weight" },
	{ "attn_k_norm.weight", "self_attn.k_norm.weight" },
	{ "ffn_norm.weight", "post_attention_layernorm.weight" },
	{ "ffn_gate.weight", "mlp.gate_proj.weight" },
	{ "ffn_up.weight", "mlp.up_proj.weight" },
	{ "ffn_down.weight", "mlp.down_proj.weight" },
}, gguf_top_names[] = {
	{ "token_embd.weight", "model.embed_tokens.weight" },
	{ "output_norm.weight", "model.norm.weight" },
	{ "output.weight", "lm_head.weight" },
};

/* The transformers name of a GGUF tensor (malloc'ed); an unknown name is
 * kept as it is, so that the model binding names it as unexpected. */
static char *hf_name(const char *name)
{
	char buf[256];
	unsigned long layer;
	size_t i;
	int used = 0;

	for (i = 0; i < sizeof(gguf_top_names) / sizeof(gguf_top_names[0]); i++)
		if (!strcmp(name, gguf_top_names[i].gguf))
			return gm_xstrdup(gguf_top_names[i].hf);
	if (sscanf(name, "blk.%lu.%n", &layer, &used) == 1 && used > 0 && !strncmp(name, "blk.", 4)) {
		for (i = 0; i < sizeof(gguf_layer_names) / sizeof(gguf_layer_names[0]); i++) {
			if (strcmp(name + used, gguf_layer_names[i].gguf))
				continue;
			snprintf(buf, sizeof(buf), "model.layers.%lu.%s", layer, gguf_layer_names[i].hf);
			return gm_xstrdup(buf);
		}
	}
	return gm_xstrdup(name);
}

/*
 * llama.cpp's converter reorders the rows of Llama's q and k projections
 * (and their biases) within each head, from transformers' rotate-half
 * layout to interleaved pairs: transformers row h*hd + i*hd/2 + j (i in
 * {0, 1}, j < hd/2) is GGUF row h*hd + 2j + i.  Whole-row copies: a row of
 * a block type is whole blocks, so this works for every tensor type.
 */
int gm_weights_llama_permute(void *dst, const void *src, int64_t rows, uint64_t row_bytes, int64_t n_heads,
			     int to_gguf, const char *what, gm_error *err)
{
	int64_t hd, h, i, j;

	if (n_heads <= 0 || rows % n_heads || (rows / n_heads) % 2)
		return gm_error_set(err, GM_EFORMAT, "%s has %lld rows, not a whole number of heads of even size "
				    "(%lld heads)", what, (long long)rows, (long long)n_heads);
	hd = rows / n_heads;
	for (h = 0; h < n_heads; h++)
		for (i = 0; i < 2; i++)
			for (j = 0; j < hd / 2; j++) {
				uint64_t hf = (uint64_t)(h * hd + i * hd / 2 + j), gg = (uint64_t)(h * hd + 2 * j + i);

				memcpy((unsigned char *)dst + (to_gguf ? gg : hf) * row_bytes,
				       (const unsigned char *)src + (to_gguf ? hf : gg) * row_bytes, row_bytes);
			}
	return 0;
}

/* Undoes the converter's permutation of t ([n_heads * hd, ...]) into a copy w owns. */
static int unpermute(gm_weights *w, gm_tensor *t, int64_t n_heads, gm_error *err)
{
	int64_t rows = t->shape[0];
	unsigned char *dst = gm_xmalloc(t->nbytes ? t->nbytes : 1);
	char what[512];
	int ret;

	snprintf(what, sizeof(what), "%s: tensor '%s'", gm_gguf_path(w->gguf), t->name);
	if ((ret = gm_weights_llama_permute(dst, t->data, rows, rows ? t->nbytes / (uint64_t)rows : 0, n_heads, 0,
					    what, err))) {
		free(dst);
		return ret;
	}
	w->owned = gm_xrealloc(w->owned, (w->nowned + 1) * sizeof(*w->owned));
	w->owned[w->nowned++] = dst;
	t->data = dst;
	return 0;
}

static int gguf_head_counts(const gm_gguf *g, int64_t *heads, int64_t *kv_heads, gm_error *err)
{
	int ret;

	if ((ret = gm_gguf_get_int(g, "llama.attention.head_count", heads, err)))
		return ret;
	*kv_heads = *heads;
	if (gm_gguf_find_kv(g, "llama.attention.head_count_kv") >= 0)
		return gm_gguf_get_int(g, "llama.attention.head_count_kv", kv_heads, err);
	return 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && !strcmp(s + ls - lx, suffix);
}

static int rename_gguf(gm_weights *w, gm_error *err)
{
	size_t i, n = gm_gguf_tensor_count(w->gguf);
	const char *arch = NULL;
	int64_t heads = 0, kv_heads = 0;
	int llama, ret;

	llama = gm_gguf_find_kv(w->gguf, "general.architecture") >= 0 &&
		!gm_gguf_get_string(w->gguf, "general.architecture", &arch, NULL, NULL) && !strcmp(arch, "llama");
	if (llama && (ret = gguf_head_counts(w->gguf, &heads, &kv_heads, err)))
		return ret;
	w->renamed = gm_xcalloc(n ? n : 1, sizeof(*w->renamed));
	w->entries = gm_xcalloc(n ? n : 1, sizeof(*w->entries));
	for (i = 0; i < n; i++) {
		const gm_tensor *src = gm_gguf_tensor(w->gguf, i);
		gm_tensor *t;

		/* consumed by the config (llama3 rope scaling), not a weight */
		if (!strcmp(src->name, "rope_freqs.weight"))
			continue;
		t = &w->renamed[w->nrenamed++];
		*t = *src;
		t->name = hf_name(src->name);
		if (llama && (ends_with(src->name, ".attn_q.weight") || ends_with(src->name, ".attn_q.bias")) &&
		    (ret = unpermute(w, t, heads, err)))
			return ret;
		if (llama && (ends_with(src->name, ".attn_k.weight") || ends_with(src->name, ".attn_k.bias")) &&
		    (ret = unpermute(w, t, kv_heads, err)))
			return ret;
		w->entries[w->n].t = t;
		w->entries[w->n].file = 0;
		w->n++;
		w->total += t->nbytes;
	}
	qsort(w->entries, w->n, sizeof(*w->entries), cmp_entry);
	for (i = 1; i < w->n; i++)
		if (!strcmp(w->entries[i - 1].t->name, w->entries[i].t->name))
			return gm_error_set(err, GM_EFORMAT, "%s: two tensors are named '%s' once renamed",
					    gm_gguf_path(w->gguf), w->entries[i].t->name);
	return 0;
}

static int open_gguf(const char *path, enum gm_weights_mode mode, gm_weights **out, gm_error *err)
{
	gm_weights *w = gm_xcalloc(1, sizeof(*w));
	int ret;

	w->mode = mode;
	add_file(w, path);
	ret = gm_gguf_open_mode(path, choose_load(w, mode), &w->gguf, err);
	if (!ret)
		ret = rename_gguf(w, err);
	if (ret) {
		gm_weights_close(w);
		return ret;
	}
	*out = w;
	return 0;
}

const gm_gguf *gm_weights_gguf(const gm_weights *w)
{
	return w->gguf;
}

int gm_weights_open(const char *dir, gm_weights **out, gm_error *err)
{
	return gm_weights_open_mode(dir, GM_WEIGHTS_AUTO, out, err);
}

size_t gm_weights_resident_count(const gm_weights *w)
{
	size_t i, n = 0;

	if (w->gguf)
		return gm_gguf_is_resident(w->gguf) ? 1 : 0;
	for (i = 0; i < w->nfiles; i++)
		n += gm_st_is_resident(w->files[i]) ? 1 : 0;
	return n;
}

int gm_weights_open_mode(const char *dir, enum gm_weights_mode mode, gm_weights **out, gm_error *err)
{
	gm_weights *w;
	char *index, *single;
	int ret;

	if (gm_gguf_is_file(dir))
		return open_gguf(dir, mode, out, err);
	if (!gm_is_dir(dir))
		return gm_error_set(err, GM_ENOENT, "%s: not a directory", dir);
	w = gm_xcalloc(1, sizeof(*w));
	w->mode = mode;
	index = gm_path_join(dir, INDEX_NAME);
	single = gm_path_join(dir, SINGLE_NAME);
	if (gm_is_file(index)) {
		ret = open_index(w, dir, index, err);
	} else if (gm_is_file(single)) {
		add_file(w, single);
		ret = open_files(w, err);
		if (!ret)
			ret = collect(w, err);
	} else {
		ret = gm_error_set(err, GM_ENOENT, "%s: no %s or %s", dir, SINGLE_NAME, INDEX_NAME);
	}
	free(index);
	free(single);
	if (ret) {
		gm_weights_close(w);
		return ret;
	}
	*out = w;
	return 0;
}

size_t gm_weights_count(const gm_weights *w)
{
	return w->n;
}

const gm_tensor *gm_weights_tensor(const gm_weights *w, size_t i)
{
	return i < w->n ? w->entries[i].t : NULL;
}

const gm_tensor *gm_weights_find(const gm_weights *w, const char *name)
{
	size_t lo = 0, hi = w->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, w->entries[mid].t->name);
		if (!c)
			return w->entries[mid].t;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t gm_weights_file_count(const gm_weights *w)
{
	return w->nfiles;
}

const char *gm_weights_file_path(const gm_weights *w, size_t i)
{
	return i < w->nfiles ? w->paths[i] : NULL;
}

const char *gm_weights_tensor_file(const gm_weights *w, size_t i)
{
	return i < w->n ? w->paths[w->entries[i].file] : NULL;
}

uint64_t gm_weights_total_bytes(const gm_weights *w)
{
	return w->total;
}

void gm_weights_dtype_mix(const gm_weights *w, char *out, size_t n)
{
	uint64_t numel[GM_DTYPE_COUNT] = { 0 };
	size_t i;

	for (i = 0; i < gm_weights_count(w); i++)
		numel[gm_weights_tensor(w, i)->dtype] += gm_weights_tensor(w, i)->numel;
	gm_dtype_mix_name(numel, out, n);
}
