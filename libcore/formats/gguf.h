/*
 * gguf.h - the GGUF file format (llama.cpp / ggml): a strict, zero-copy reader.
 *
 * Layout (versions 2 and 3; all little-endian):
 *   "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x (string key, u32 value type, value),
 *   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type,
 *               u64 offset),
 *   padding to general.alignment (32 when absent), then the data section;
 *   each tensor's offset is relative to the data section and a multiple of
 *   the alignment.
 * A string is a u64 byte length and the bytes (no NUL); an array is a u32
 * element type, a u64 count and the elements (arrays of arrays allowed).
 * ne[] is innermost first: a row-major [out, in] matrix has ne = {in, out}.
 *
 * The reader trusts nothing: every count, length and offset is checked
 * against the bytes that are left before anything is allocated or read,
 * so a hostile file gets a gm_error naming the file and the key or tensor,
 * never a read out of bounds.  Refused: a bad magic or version, a
 * big-endian file, counts or strings longer than the file, unknown value
 * types, arrays nested deeper than 8, duplicate keys or tensor names,
 * general.alignment that is not a power of two, more than 4 dimensions,
 * dimension products that overflow, block types whose rows are not whole
 * blocks, tensors past the end of the file or overlapping one another, and
 * tensor types git-model has no kernels for (i-quants, ternary types...:
 * the message names the type and the tensor).
 *
 * Tensor views are gm_tensors with the GGUF name and the row-major shape
 * (ne reversed), pointing into the mapping; they live as long as the file.
 */
#ifndef GM_GGUF_H
#define GM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "formats/safetensors.h"

enum gm_gguf_vtype {
	GM_GGUF_UINT8 = 0,
	GM_GGUF_INT8 = 1,
	GM_GGUF_UINT16 = 2,
	GM_GGUF_INT16 = 3,
	GM_GGUF_UINT32 = 4,
	GM_GGUF_INT32 = 5,
	GM_GGUF_FLOAT32 = 6,
	GM_GGUF_BOOL = 7,
	GM_GGUF_STRING = 8,
	GM_GGUF_ARRAY = 9,
	GM_GGUF_UINT64 = 10,
	GM_GGUF_INT64 = 11,
	GM_GGUF_FLOAT64 = 12,
	GM_GGUF_VTYPE_COUNT
};

#define GM_GGUF_MAX_DIMS 4
#define GM_GGUF_DEFAULT_ALIGNMENT 32

typedef struct gm_gguf gm_gguf;

/* Maps (or, GM_ST_LOAD_RESIDENT, reads into huge-page memory, as
 * gm_st_open_mode) and validates a file.  On success *out owns it. */
int gm_gguf_open(const char *path, gm_gguf **out, gm_error *err);
int gm_gguf_open_mode(const char *path, enum gm_st_load mode, gm_gguf **out, gm_error *err);
/* Validates an image already in memory (borrowed, must outlive *out); what
 * names it in errors.  For the fuzzer and tests. */
int gm_gguf_open_memory(const void *data, size_t len, const char *what, gm_gguf **out, gm_error *err);
void gm_gguf_close(gm_gguf *g);

const char *gm_gguf_path(const gm_gguf *g);
uint32_t gm_gguf_version(const gm_gguf *g);
uint32_t gm_gguf_alignment(const gm_gguf *g);
int gm_gguf_is_resident(const gm_gguf *g);
/* The name of a value type ("uint32", "string", ...); "?" when unknown. */
const char *gm_gguf_vtype_name(int type);
/* ggml's name of a tensor type id ("q4_K", "iq2_xxs"...); NULL when unknown. */
const char *gm_gguf_ggml_type_name(uint32_t type);
/* llama.cpp's name of the file's general.file_type ("Q4_K_M", "BF16"...); NULL when absent or unknown. */
const char *gm_gguf_file_type_name(const gm_gguf *g);
/* The ggml type id of a dtype that GGUF can hold; -1 when none. */
int gm_gguf_ggml_type(enum gm_dtype t);

/* ---- metadata, in file order */
size_t gm_gguf_kv_count(const gm_gguf *g);
const char *gm_gguf_kv_key(const gm_gguf *g, size_t i);
enum gm_gguf_vtype gm_gguf_kv_type(const gm_gguf *g, size_t i);
/* The index of key, or -1. */
long gm_gguf_find_kv(const gm_gguf *g, const char *key);

/*
 * Typed getters by key.  GM_ENOENT when the key is absent (the message
 * names it), GM_EFORMAT when its value has another type or does not fit.
 * get_int takes any integer type; get_float any float or integer type;
 * get_string gives the value NUL-terminated (owned by g; *len may be NULL;
 * a string holding a NUL byte is GM_EFORMAT).
 */
int gm_gguf_get_int(const gm_gguf *g, const char *key, int64_t *out, gm_error *err);
int gm_gguf_get_float(const gm_gguf *g, const char *key, double *out, gm_error *err);
int gm_gguf_get_bool(const gm_gguf *g, const char *key, int *out, gm_error *err);
int gm_gguf_get_string(const gm_gguf *g, const char *key, const char **out, size_t *len, gm_error *err);
/* An array: its element type and length. */
int gm_gguf_get_array(const gm_gguf *g, const char *key, enum gm_gguf_vtype *elem, uint64_t *count,
		      gm_error *err);
/* Element i of the array under key (bounds checked; key must be an array
 * of the matching kind: strings, integers, floats or integers, bools).
 * Array strings are not NUL-terminated. */
int gm_gguf_array_string(const gm_gguf *g, const char *key, uint64_t i, const char **s, size_t *len,
			 gm_error *err);
int gm_gguf_array_int(const gm_gguf *g, const char *key, uint64_t i, int64_t *out, gm_error *err);
int gm_gguf_array_float(const gm_gguf *g, const char *key, uint64_t i, double *out, gm_error *err);

/* ---- tensors, in file order */
size_t gm_gguf_tensor_count(const gm_gguf *g);
const gm_tensor *gm_gguf_tensor(const gm_gguf *g, size_t i);
/* NULL when absent. */
const gm_tensor *gm_gguf_find_tensor(const gm_gguf *g, const char *name);
/* Offset of the data section in the file (tensor offsets are relative to it). */
uint64_t gm_gguf_data_offset(const gm_gguf *g);

/* The stored bytes of key i's value (a string's bytes without its length; an
 * array's elements, *elem and *count set), for copying it (gm_gguf_writer_copy_kv). */
int gm_gguf_kv_raw(const gm_gguf *g, size_t i, const void **value, size_t *len, uint32_t *elem, uint64_t *count);

/* ---- the writer (gguf-write.c)
 *
 * Writes a GGUF v3 file: the keys in the order they were set (a key set
 * twice keeps its first place and its last value), then the tensors in the
 * order added, each at the next multiple of the alignment (general.alignment
 * is written when it is not the default 32), the file under a temporary name
 * and renamed when complete.  Reading a file and copying every key and
 * tensor back in order writes the same bytes.  Shapes are row-major, as in
 * gm_tensor (written reversed, as ne).
 */
typedef struct gm_gguf_writer gm_gguf_writer;

gm_gguf_writer *gm_gguf_writer_new(uint32_t alignment); /* 0: the default, 32 */
void gm_gguf_writer_free(gm_gguf_writer *w);
int gm_gguf_writer_set_string(gm_gguf_writer *w, const char *key, const char *value, gm_error *err);
/* An integer or bool key of the given type (GM_ERROR when v does not fit it). */
int gm_gguf_writer_set_int(gm_gguf_writer *w, const char *key, enum gm_gguf_vtype type, int64_t v, gm_error *err);
/* A float32 or float64 key. */
int gm_gguf_writer_set_float(gm_gguf_writer *w, const char *key, enum gm_gguf_vtype type, double v,
			     gm_error *err);
/* An array of n strings (lens[i] bytes each). */
int gm_gguf_writer_set_strings(gm_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
			       uint64_t n, gm_error *err);
/* An array of n int32 values. */
int gm_gguf_writer_set_int32s(gm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n, gm_error *err);
/* Key i of g, its value as stored. */
int gm_gguf_writer_copy_kv(gm_gguf_writer *w, const gm_gguf *g, size_t i, gm_error *err);
/* data (borrowed until write) holds the tensor's bytes: gm_dtype_nbytes of its elements. */
int gm_gguf_writer_add_tensor(gm_gguf_writer *w, const char *name, enum gm_dtype dtype, int ndim,
			      const int64_t *shape, const void *data, gm_error *err);
/* Writes the file at path atomically (base/fs.h: a temporary, then renamed). */
int gm_gguf_writer_write(gm_gguf_writer *w, const char *path, gm_error *err);
/* Writes the file into af, opened by gm_atomic_open, which the caller commits or aborts. */
int gm_gguf_writer_write_to(gm_gguf_writer *w, gm_atomic_file *af, gm_error *err);

/* ---- the tokenizer and chat template (gguf-vocab.c) */

/*
 * Appends to out a tokenizer.json document (for gm_tokenizer_load_memory)
 * equivalent to the file's byte-level BPE vocabulary: tokens, token types
 * (control -> special added token, user-defined -> added token, unused ->
 * left out), merges, and the pre-tokenizer tokenizer.ggml.pre names, as
 * the original tokenizer.json spells it (qwen2, qwen35, llama-bpe/llama3,
 * gpt-2/default, smollm/starcoder and aliases).  GM_EUNSUPPORTED for other
 * models (SentencePiece 'llama') and pre-tokenizers, naming them.
 */
int gm_gguf_tokenizer_json(const gm_gguf *g, gm_buf *out, gm_error *err);
/*
 * The tokenizer.ggml.pre name, as llama.cpp's converter spells it, of a
 * byte-level BPE tokenizer.json's pre-tokenization: split, the Split regex
 * before ByteLevel (NULL when none); gpt2_regex, ByteLevel's use_regex;
 * nfc, an NFC normalizer; ignore_merges, the BPE model's flag.  Returns the
 * name (its first *name_len bytes), or NULL when no name this reader maps
 * back means exactly that: what is written is what gm_gguf_tokenizer_json
 * reads back.
 */
const char *gm_gguf_pre_name(const char *split, int gpt2_regex, int nfc, int ignore_merges, size_t *name_len);
/* tokenizer.chat_template and the bos/eos tokens' texts (NULL when none),
 * malloc'ed; GM_ENOENT when the file has no template. */
int gm_gguf_chat_template(const gm_gguf *g, char **tmpl, char **bos, char **eos, gm_error *err);

/* ---- finding GGUF files */

/* 1 when path is a regular file whose name ends in ".gguf" (any case). */
int gm_gguf_is_file(const char *path);
/*
 * Chooses the GGUF file of a model directory (a Hub "-GGUF" repository
 * holds one per quantization).  Candidates: the *.gguf files of dir (not
 * mmproj-*, not LFS pointers of variants left undownloaded).  quant NULL:
 * the only candidate; else the candidate named quant, or the only one whose
 * name holds quant as a word, any case ("Q4_K_M" picks "x-Q4_K_M.gguf",
 * "q4_k" does not).  Returns 1 with *out the path (malloc'ed), 0 when dir
 * has no candidate and quant is NULL, or an error listing the candidates
 * when the choice is missing or ambiguous.
 */
int gm_gguf_pick(const char *dir, const char *quant, char **out, gm_error *err);

#endif
