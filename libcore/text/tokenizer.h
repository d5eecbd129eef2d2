/*
 * tokenizer.h - the Hugging Face byte-level BPE tokenizer of Qwen models,
 * read from tokenizer.json.
 *
 * Encoding: added tokens (special or not) are matched first, longest
 * first, in the raw text; each piece between them is NFC-normalized, split
 * with the pre-tokenizer's Split regex taken from the file (PCRE2, UTF+UCP,
 * JIT), mapped to the byte-level alphabet, and merged by BPE merge rank.
 * gm_tokenizer_encode adds no BOS/EOS; gm_tokenizer_encode_special adds
 * what the post-processor's TemplateProcessing puts around a single
 * sequence (Llama 3's <|begin_of_text|>; Qwen adds nothing).  Decoding maps tokens back to bytes; invalid UTF-8 is
 * replaced by U+FFFD, as tokenizers does.
 *
 * A gm_tokenizer is immutable once loaded and may be shared between threads.
 */
#ifndef GM_TOKENIZER_H
#define GM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct gm_tokenizer gm_tokenizer;

#define GM_TOKENIZER_MAX_TEMPLATE 8

/* Loads a tokenizer.json (a file path, or a directory holding one).
 * GM_EFORMAT for a malformed file; GM_EUNSUPPORTED, naming the feature, for
 * what is not byte-level BPE (another model type; a normalizer other than
 * NFC; a pre-tokenizer other than Split (Isolated) and ByteLevel; a decoder
 * other than ByteLevel...).  Of the post-processor only TemplateProcessing's
 * special tokens are kept (gm_tokenizer_encode_special), at most
 * GM_TOKENIZER_MAX_TEMPLATE on each side.  Takes a few hundred milliseconds
 * for Qwen3's 151k tokens. */
int gm_tokenizer_load(const char *path, gm_tokenizer **out, gm_error *err);
/* Loads from a tokenizer.json document already in memory; what names it in errors. */
int gm_tokenizer_load_memory(const char *json, size_t len, const char *what, gm_tokenizer **out,
			     gm_error *err);
void gm_tokenizer_free(gm_tokenizer *t);

/* Number of ids (model vocab plus added tokens): valid ids are [0, n). */
size_t gm_tokenizer_n_tokens(const gm_tokenizer *t);

/* Encodes text[0..len) (UTF-8; anything else is GM_EINVAL), as
 * encode(text, add_special_tokens=False).  *ids is malloc'ed (even when
 * *n_ids is 0), owned by the caller. */
int gm_tokenizer_encode(const gm_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids,
			gm_error *err);

/* As gm_tokenizer_encode, then the post-processor's special tokens around
 * the ids: encode(text, add_special_tokens=True), for raw prompts (a chat
 * template writes its own BOS, so rendered chats use gm_tokenizer_encode). */
int gm_tokenizer_encode_special(const gm_tokenizer *t, const char *text, size_t len, int32_t **ids,
				size_t *n_ids, gm_error *err);
/* The special tokens gm_tokenizer_encode_special puts before (*pre) and after (*suf) the text's ids. */
void gm_tokenizer_template(const gm_tokenizer *t, const int32_t **pre, size_t *n_pre, const int32_t **suf,
			   size_t *n_suf);

/* Appends the UTF-8 text of ids[0..n) to out (invalid sequences become U+FFFD,
 * as String::from_utf8_lossy does).  skip_special drops special added tokens,
 * as decode(skip_special_tokens=True).  Ids without a token (>= n_tokens: the
 * padding rows of an embedding) decode to nothing, as in tokenizers; a
 * negative id is an error (GM_EINVAL). */
int gm_tokenizer_decode(const gm_tokenizer *t, const int32_t *ids, size_t n, int skip_special, gm_buf *out,
			gm_error *err);

/* Appends the raw bytes of one token (byte-level decoded; an added token's
 * content as is, at least for contents in printable ASCII: the bytes are
 * always those tokenizers' ByteLevel decoder gives).  For streaming: the
 * bytes may end inside a UTF-8 character; see gm_utf8_stream in generate.h.
 * An id without a token appends nothing; a negative id is GM_EINVAL. */
int gm_tokenizer_token_bytes(const gm_tokenizer *t, int32_t id, gm_buf *out, gm_error *err);

/* The id of a token given by its exact content ("<|im_end|>"), or -1: an
 * added token's content, or a model token in its byte-level form ("Ġhello"
 * for " hello"), as tokenizers' token_to_id. */
int32_t gm_tokenizer_token_id(const gm_tokenizer *t, const char *content);
/* Whether id is an added token marked special. */
int gm_tokenizer_is_special(const gm_tokenizer *t, int32_t id);

#endif
