/*
 * kv.c - the paged KV block pool (see kv.h, kv-internal.h).
 *
 * Free blocks are a stack (free_list[0 .. n_free)); a block's reference
 * count is the number of sequence block tables that list it.  The memory
 * is one anonymous mapping: its pages are only touched when a block is
 * first written, so a large pool costs address space, not memory, until
 * it fills.
 */
#include "ops/kv-internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/buf.h"
#include "base/sysmem.h"

enum gm_kv_type gm_kv_type_resolve(const gm_model *m, enum gm_kv_type t)
{
	enum gm_dtype d;

	if (t != GM_KV_AUTO)
		return t;
	d = m->config.num_hidden_layers > 0 ? m->layers[0].q_proj->dtype : m->embed_tokens->dtype;
	return d == GM_DTYPE_BF16 ? GM_KV_BF16 : d == GM_DTYPE_F16 ? GM_KV_F16 : GM_KV_F32;
}

int gm_kv_type_parse(const char *s, enum gm_kv_type *out, gm_error *err)
{
	static const char *names[] = { "auto", "f32", "bf16", "f16" };
	int i;

	for (i = 0; i < 4; i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum gm_kv_type)i;
			return 0;
		}
	}
	return gm_error_set(err, GM_EINVAL, "unknown KV cache type '%s' (expected auto, f32, bf16 or f16)", s);
}

const char *gm_kv_type_name(enum gm_kv_type t)
{
	switch (t) {
	case GM_KV_F32: return "f32";
	case GM_KV_BF16: return "bf16";
	case GM_KV_F16: return "f16";
	default: return "auto";
	}
}

static size_t type_size(enum gm_kv_type t)
{
	return t == GM_KV_F32 ? 4 : 2;
}

size_t gm_kv_bytes_per_token(const gm_model *m, enum gm_kv_type t)
{
	const gm_model_config *c = &m->config;

	t = gm_kv_type_resolve(m, t);
	return (size_t)c->num_hidden_layers * 2 * (size_t)c->num_key_value_heads * (size_t)c->head_dim * type_size(t);
}

int gm_kv_new(const gm_model *m, enum gm_kv_type t, int64_t max_tokens, gm_kv **out, gm_error *err)
{
	const gm_model_config *c = &m->config;
	gm_kv *kv;
	int64_t i;
	uint64_t avail;
	void *mem;
	int ret;

	*out = NULL;
	if ((int)t < GM_KV_AUTO || (int)t > GM_KV_F16)
		return gm_error_set(err, GM_EINVAL, "invalid KV cache type %d", (int)t);
	if (max_tokens < 1 || max_tokens > ((int64_t)1 << 31) - GM_KV_BLOCK)
		return gm_error_set(err, GM_EINVAL, "invalid KV cache size of %lld tokens", (long long)max_tokens);
	kv = gm_xcalloc(1, sizeof(*kv));
	kv->m = m;
	kv->type = gm_kv_type_resolve(m, t);
	kv->dt = kv->type == GM_KV_BF16 ? GM_DTYPE_BF16 : kv->type == GM_KV_F16 ? GM_DTYPE_F16 : GM_DTYPE_F32;
	kv->elsize = type_size(kv->type);
	kv->n_layers = c->num_hidden_layers;
	kv->n_kv = c->num_key_value_heads;
	kv->head_dim = c->head_dim;
	kv->row_bytes = (size_t)kv->head_dim * kv->elsize;
	kv->layer_bytes = 2 * (size_t)kv->n_kv * GM_KV_BLOCK * kv->row_bytes;
	kv->block_bytes = (size_t)kv->n_layers * kv->layer_bytes;
	kv->n_blocks = (max_tokens + GM_KV_BLOCK - 1) / GM_KV_BLOCK;
	kv->mem_len = (size_t)kv->n_blocks * kv->block_bytes;
	/*
	 * The pool is mapped now and touched as tokens come: a pool the machine
	 * cannot hold would be killed half way, so it is refused here.
	 */
	avail = gm_mem_available();
	if (avail && kv->mem_len > avail) {
		gm_buf need = GM_BUF_INIT, have = GM_BUF_INIT;

		gm_buf_add_human_bytes(&need, kv->mem_len);
		gm_buf_add_human_bytes(&have, avail);
		ret = gm_error_set(err, GM_ENOMEM, "a KV cache of %lld tokens needs %s (%zu bytes per token in %s) and "
				   "%s of memory is available: use a shorter context (--ctx, --kv-tokens) or a "
				   "smaller KV type (--kv-type bf16)", (long long)max_tokens, need.buf,
				   gm_kv_bytes_per_token(m, kv->type), gm_kv_type_name(kv->type), have.buf);
		gm_buf_release(&need);
		gm_buf_release(&have);
		free(kv);
		return ret;
	}
	mem = mmap(NULL, kv->mem_len ? kv->mem_len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED) {
		double mib = (double)kv->mem_len / (1024.0 * 1024.0);

		free(kv);
		return gm_error_set(err, GM_ENOMEM, "cannot reserve a KV cache of %lld tokens (%.1f MiB)",
				    (long long)max_tokens, mib);
	}
#ifdef MADV_HUGEPAGE
	/* fewer TLB misses when attention walks long sequences; advice only */
	madvise(mem, kv->mem_len, MADV_HUGEPAGE);
#endif
	kv->mem = mem;
	kv->ref = gm_xcalloc((size_t)kv->n_blocks, sizeof(*kv->ref));
	kv->free_list = gm_xmalloc((size_t)kv->n_blocks * sizeof(*kv->free_list));
	/* popped from the end: block 0 first */
	for (i = 0; i < kv->n_blocks; i++)
		kv->free_list[i] = (int32_t)(kv->n_blocks - 1 - i);
	kv->n_free = kv->n_blocks;
	*out = kv;
	return 0;
}

void gm_kv_free(gm_kv *kv)
{
	int i;

	if (!kv)
		return;
	for (i = 0; i < kv->n_seqs; i++)
		free(kv->seqs[i].blocks);
	free(kv->seqs);
	free(kv->ref);
	free(kv->free_list);
	if (kv->mem)
		munmap(kv->mem, kv->mem_len ? kv->mem_len : 1);
	free(kv);
}

enum gm_kv_type gm_kv_type_of(const gm_kv *kv)
{
	return kv->type;
}

int gm_kv_seq_valid(const gm_kv *kv, int seq)
{
	return seq >= 0 && seq < kv->n_seqs && kv->seqs[seq].used;
}

int gm_kv_seq_new(gm_kv *kv, int *seq, gm_error *err)
{
	int i;

	(void)err;
	for (i = 0; i < kv->n_seqs && kv->seqs[i].used; i++)
		;
	if (i == kv->n_seqs) {
		int n = kv->n_seqs ? 2 * kv->n_seqs : 8;

		kv->seqs = gm_xrealloc(kv->seqs, (size_t)n * sizeof(*kv->seqs));
		memset(kv->seqs + kv->n_seqs, 0, (size_t)(n - kv->n_seqs) * sizeof(*kv->seqs));
		kv->n_seqs = n;
	}
	kv->seqs[i].used = 1;
	kv->seqs[i].len = 0;
	*seq = i;
	return 0;
}

static void block_unref(gm_kv *kv, int32_t b)
{
	if (--kv->ref[b] == 0)
		kv->free_list[kv->n_free++] = b;
}

static int32_t block_take(gm_kv *kv)
{
	int32_t b = kv->free_list[--kv->n_free];

	kv->ref[b] = 1;
	return b;
}

static void table_grow(struct gm_kv_seq *s, int need)
{
	if (need <= s->cap)
		return;
	s->cap = need > 2 * s->cap ? need : 2 * s->cap;
	s->blocks = gm_xrealloc(s->blocks, (size_t)s->cap * sizeof(*s->blocks));
}

/* Blocks held by a sequence of len positions. */
static int blocks_of(int len)
{
	return (len + GM_KV_BLOCK - 1) / GM_KV_BLOCK;
}

/* Copies the first slots positions of every layer's K and V rows of block src into dst. */
static void block_copy(gm_kv *kv, int32_t dst, int32_t src, int slots)
{
	size_t n = (size_t)slots * kv->row_bytes;
	int64_t l, g;

	for (l = 0; l < kv->n_layers; l++) {
		for (g = 0; g < kv->n_kv; g++) {
			memcpy(gm_kv_k_row(kv, dst, l, g, 0), gm_kv_k_row(kv, src, l, g, 0), n);
			memcpy(gm_kv_v_row(kv, dst, l, g, 0), gm_kv_v_row(kv, src, l, g, 0), n);
		}
	}
}

int gm_kv_seq_fork(gm_kv *kv, int src, int n, int *seq, gm_error *err)
{
	struct gm_kv_seq *s, *d;
	int full, part, i, id, ret;

	if (!gm_kv_seq_valid(kv, src))
		return gm_error_set(err, GM_EINVAL, "no KV sequence %d", src);
	if (n < 0 || n > kv->seqs[src].len)
		return gm_error_set(err, GM_EINVAL, "cannot fork %d positions of a sequence of %d", n,
				    kv->seqs[src].len);
	full = n / GM_KV_BLOCK;
	part = n % GM_KV_BLOCK;
	if (part && kv->n_free < 1)
		return gm_error_set(err, GM_ENOMEM, "no free KV block to fork a sequence (%lld blocks in use)",
				    (long long)kv->n_blocks);
	if ((ret = gm_kv_seq_new(kv, &id, err)))
		return ret;
	s = &kv->seqs[src]; /* after gm_kv_seq_new, which may move the array */
	d = &kv->seqs[id];
	table_grow(d, full + (part ? 1 : 0));
	for (i = 0; i < full; i++) {
		d->blocks[i] = s->blocks[i];
		kv->ref[s->blocks[i]]++;
	}
	if (part) {
		d->blocks[full] = block_take(kv);
		block_copy(kv, d->blocks[full], s->blocks[full], part);
	}
	d->len = n;
	*seq = id;
	return 0;
}

void gm_kv_seq_free(gm_kv *kv, int seq)
{
	struct gm_kv_seq *s;
	int i;

	if (!gm_kv_seq_valid(kv, seq))
		return;
	s = &kv->seqs[seq];
	for (i = 0; i < blocks_of(s->len); i++)
		block_unref(kv, s->blocks[i]);
	s->used = 0;
	s->len = 0;
}

int gm_kv_seq_len(const gm_kv *kv, int seq)
{
	return gm_kv_seq_valid(kv, seq) ? kv->seqs[seq].len : -1;
}

void gm_kv_seq_truncate(gm_kv *kv, int seq, int n)
{
	struct gm_kv_seq *s;
	int i;

	if (!gm_kv_seq_valid(kv, seq))
		return;
	s = &kv->seqs[seq];
	if (n < 0)
		n = 0;
	if (n >= s->len)
		return;
	for (i = blocks_of(n); i < blocks_of(s->len); i++)
		block_unref(kv, s->blocks[i]);
	s->len = n;
}

int64_t gm_kv_free_blocks(const gm_kv *kv)
{
	return kv->n_free;
}

int64_t gm_kv_n_blocks(const gm_kv *kv)
{
	return kv->n_blocks;
}

int64_t gm_kv_blocks_needed(const gm_kv *kv, int seq, int n)
{
	const struct gm_kv_seq *s;
	int64_t need;

	if (!gm_kv_seq_valid(kv, seq) || n < 0)
		return 0;
	s = &kv->seqs[seq];
	need = (int64_t)blocks_of(s->len + n) - blocks_of(s->len);
	/* appending into a partial last block that another sequence shares copies it first */
	if (n > 0 && s->len % GM_KV_BLOCK && kv->ref[s->blocks[s->len / GM_KV_BLOCK]] > 1)
		need++;
	return need;
}

int gm_kv_reserve(gm_kv *kv, int seq, int n, gm_error *err)
{
	struct gm_kv_seq *s = &kv->seqs[seq];
	int64_t need = gm_kv_blocks_needed(kv, seq, n);
	int have = blocks_of(s->len), want = blocks_of(s->len + n), i;

	if (need > kv->n_free)
		return gm_error_set(err, GM_ENOMEM, "the KV cache is full: %lld more blocks needed, %lld free of %lld",
				    (long long)need, (long long)kv->n_free, (long long)kv->n_blocks);
	if (n > 0 && s->len % GM_KV_BLOCK && kv->ref[s->blocks[have - 1]] > 1) {
		int32_t old = s->blocks[have - 1], nb = block_take(kv);

		block_copy(kv, nb, old, s->len % GM_KV_BLOCK);
		block_unref(kv, old);
		s->blocks[have - 1] = nb;
	}
	table_grow(s, want);
	for (i = have; i < want; i++)
		s->blocks[i] = block_take(kv);
	return 0;
}
