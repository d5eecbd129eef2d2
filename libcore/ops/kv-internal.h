/*
 * kv-internal.h - the block pool's layout, for the forward pass and the
 * CPU attention op (not part of the library's API).
 *
 * Block b starts at mem + b * block_bytes and holds, for each layer l,
 * K then V, each [n_kv][GM_KV_BLOCK][head_dim] elements of type dt:
 *
 *   K row of kv head g, slot s:  mem + b * block_bytes + l * layer_bytes + (g * GM_KV_BLOCK + s) * row_bytes
 *   V row:                       the same + layer_bytes / 2
 *
 * (row_bytes = head_dim * elsize), so one kv head's keys of a block are
 * GM_KV_BLOCK contiguous rows (4 KiB for head_dim 128 in bf16).
 */
#ifndef GM_KV_INTERNAL_H
#define GM_KV_INTERNAL_H

#include "formats/dtype.h"
#include "ops/kv.h"

struct gm_kv_seq {
	int used;
	int len;          /* positions held */
	int cap;          /* entries of blocks */
	int32_t *blocks;  /* block table: position p is in blocks[p / GM_KV_BLOCK] */
};

struct gm_kv {
	const gm_model *m;
	enum gm_kv_type type;   /* resolved */
	enum gm_dtype dt;       /* F32, BF16 or F16 */
	size_t elsize, row_bytes, layer_bytes, block_bytes;
	int64_t n_layers, n_kv, head_dim;
	int64_t n_blocks;
	unsigned char *mem;     /* n_blocks * block_bytes, mmap'd */
	size_t mem_len;
	int32_t *ref;           /* [n_blocks] references */
	int32_t *free_list;     /* [n_blocks], the first n_free entries free */
	int64_t n_free;
	struct gm_kv_seq *seqs;
	int n_seqs;             /* entries of seqs (used or not) */
};

static inline unsigned char *gm_kv_k_row(const gm_kv *kv, int32_t block, int64_t layer, int64_t g, int64_t slot)
{
	return kv->mem + (size_t)block * kv->block_bytes + (size_t)layer * kv->layer_bytes +
	       (size_t)(g * GM_KV_BLOCK + slot) * kv->row_bytes;
}

static inline unsigned char *gm_kv_v_row(const gm_kv *kv, int32_t block, int64_t layer, int64_t g, int64_t slot)
{
	return gm_kv_k_row(kv, block, layer, g, slot) + kv->layer_bytes / 2;
}

/*
 * Makes room to append n tokens to seq: new blocks at the end of its table
 * and a private copy of a shared partial last block.  The length is not
 * changed (the caller sets it once the rows are written).  GM_ENOMEM,
 * nothing changed, when the free list is short (gm_kv_blocks_needed).
 */
int gm_kv_reserve(gm_kv *kv, int seq, int n, gm_error *err);

#endif
