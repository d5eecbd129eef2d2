/*
 * safetensors.h - the safetensors file format: a zero-copy reader and a writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * (optionally right-padded with spaces), then the data buffer.  Header:
 *   {"__metadata__": {str: str}, "NAME": {"dtype": "BF16", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * offsets relative to the data buffer, end exclusive, row-major little-endian.
 *
 * The reader mmaps the file; tensor views point into the mapping and live as
 * long as the gm_st_file.  It rejects, with a message naming the file and the
 * tensor: a header length past the file or over 100 MB, invalid JSON, unknown
 * dtypes, negative or non-integer shapes, offsets out of range, reversed,
 * overlapping or leaving holes, sizes not matching dtype x shape, duplicate
 * names.
 */
#ifndef GM_SAFETENSORS_H
#define GM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "formats/dtype.h"
#include "base/error.h"

#define GM_ST_MAX_DIMS 8
#define GM_ST_MAX_HEADER (100u * 1000u * 1000u) /* bytes; as the reference implementation */

/* A view of one tensor.  data points into the file mapping (read-only). */
typedef struct gm_tensor {
	const char *name;
	enum gm_dtype dtype;
	int ndim;
	int64_t shape[GM_ST_MAX_DIMS];
	uint64_t numel;
	const void *data;
	uint64_t nbytes;
	uint64_t offset; /* begin offset within the data buffer */
} gm_tensor;

typedef struct gm_st_file gm_st_file;

/* Maps and validates a file.  On success *out owns the mapping. */
int gm_st_open(const char *path, gm_st_file **out, gm_error *err);
/*
 * How gm_st_open_mode holds the file: GM_ST_LOAD_MAP maps it (pages read
 * on first touch, shared with the page cache); GM_ST_LOAD_RESIDENT reads
 * it into anonymous memory aligned to 2 MiB and advised MADV_HUGEPAGE
 * (read-only once filled), falling back to the mapping when that memory
 * or the advice is refused.  The tensor views are the same bytes either way.
 */
enum gm_st_load {
	GM_ST_LOAD_MAP,
	GM_ST_LOAD_RESIDENT
};
int gm_st_open_mode(const char *path, enum gm_st_load mode, gm_st_file **out, gm_error *err);
/*
 * A whole file held as gm_st_open_mode holds it (mapped, or a resident
 * huge-page copy), for the readers of other formats (gguf.c).  data is
 * NULL for an empty file; gm_st_unmap releases size bytes.
 */
typedef struct gm_st_mapping {
	void *data;
	size_t len;      /* the file's length */
	size_t size;     /* bytes to unmap: len, or more for a resident copy */
	int resident;
} gm_st_mapping;
int gm_st_map_file(const char *path, enum gm_st_load mode, gm_st_mapping *out, gm_error *err);
void gm_st_unmap(gm_st_mapping *m);
/* 1 when f holds a resident copy (GM_ST_LOAD_RESIDENT took effect). */
int gm_st_is_resident(const gm_st_file *f);
/* Validates a file image already in memory (borrowed, must outlive *out);
 * what names it in errors.  Used by the fuzzer and by tests. */
int gm_st_open_memory(const void *data, size_t len, const char *what, gm_st_file **out, gm_error *err);
void gm_st_close(gm_st_file *f);

const char *gm_st_path(const gm_st_file *f);
/* Tensors in header order. */
size_t gm_st_count(const gm_st_file *f);
const gm_tensor *gm_st_tensor(const gm_st_file *f, size_t i);
/* NULL when absent. */
const gm_tensor *gm_st_find(const gm_st_file *f, const char *name);
/* The tensors' dtypes for summaries ("f32", "bf16+f32"; see gm_dtype_mix_name). */
void gm_st_dtype_mix(const gm_st_file *f, char *out, size_t n);

/* __metadata__ entries in header order; value NULL when key absent. */
size_t gm_st_metadata_count(const gm_st_file *f);
void gm_st_metadata_at(const gm_st_file *f, size_t i, const char **key, const char **value);
const char *gm_st_metadata(const gm_st_file *f, const char *key);

/*
 * Writer.  Tensors are written in the order they are added (header and data
 * alike), the header is compact JSON with "__metadata__" first, padded with
 * spaces to a multiple of 8 bytes so the data buffer is 8-byte aligned.
 * Reading a file this writer produced and adding its tensors and metadata
 * back in order writes the same bytes again.  The file is written under a
 * temporary name and renamed (see fs.h).
 */
typedef struct gm_st_writer gm_st_writer;

/* Produces len bytes of tensor data starting at byte offset within the tensor. */
typedef int (*gm_st_fill_fn)(void *ctx, const char *name, void *dst, uint64_t offset, uint64_t len,
			     gm_error *err);

gm_st_writer *gm_st_writer_new(void);
void gm_st_writer_free(gm_st_writer *w);
int gm_st_writer_set_metadata(gm_st_writer *w, const char *key, const char *value, gm_error *err);
/* data is borrowed until gm_st_writer_write returns; nbytes is derived from dtype x shape. */
int gm_st_writer_add(gm_st_writer *w, const char *name, enum gm_dtype dtype, int ndim,
		     const int64_t *shape, const void *data, gm_error *err);
/* Data produced in chunks by fill(ctx, ...) while writing: for tensors too large to hold. */
int gm_st_writer_add_fill(gm_st_writer *w, const char *name, enum gm_dtype dtype, int ndim,
			  const int64_t *shape, gm_st_fill_fn fill, void *ctx, gm_error *err);
int gm_st_writer_write(gm_st_writer *w, const char *path, gm_error *err);

#endif
