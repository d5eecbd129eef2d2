/*
 * fuzz-tokenizer-text.c - libFuzzer target for encoding and decoding text
 * with a valid tokenizer (libcore/text/tokenizer.c): the real Qwen3
 * tokenizer.json embedded in libcore (151,669 tokens, its Split regex,
 * NFC, 26 added tokens).  Prompts, chat messages and training data are
 * all someone else's text.
 *
 * Each input is one text.  Invalid UTF-8 must be refused with a message.
 * Valid UTF-8 x must encode to ids in [0, n_tokens), and:
 *   - decode(encode(x)) == x when x is in NFC (the byte-level BPE loses
 *     nothing; the normalizer is the only step that changes text);
 *   - otherwise decode(encode(x)) is valid UTF-8, and in every case
 *     encode(decode(encode(x))) == encode(x) (decoding then encoding is
 *     stable: what `git train` and the server rely on when they re-tokenize
 *     generated text);
 *   - the bytes of gm_tokenizer_token_bytes, concatenated, are the decoded
 *     text (what streaming output sends).
 */
#include <utf8proc.h>

#include "base/asset.h"
#include "base/buf.h"
#include "text/tokenizer.h"
#include "fuzz-common.h"

static gm_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	gm_buf json = GM_BUF_INIT;
	gm_error err = GM_ERROR_INIT;

	(void)argc;
	(void)argv;
	if (gm_asset_read("qwen3/tokenizer.json", &json, &err) ||
	    gm_tokenizer_load_memory(json.buf, json.len, "qwen3/tokenizer.json", &tok, &err)) {
		fprintf(stderr, "fuzz-tokenizer-text: %s\n", err.msg);
		abort();
	}
	gm_buf_release(&json);
	return 0;
}

/* 1 when s[0..n) is already in NFC. */
static int is_nfc(const uint8_t *s, size_t n)
{
	utf8proc_uint8_t *dst = NULL;
	utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
	int same = m >= 0 && (size_t)m == n && !memcmp(dst, s, n);

	free(dst);
	return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_error err = GM_ERROR_INIT;
	int32_t *ids = NULL, *again = NULL;
	size_t n = 0, m = 0, i;
	gm_buf text = GM_BUF_INIT, pieces = GM_BUF_INIT;
	int ret = gm_tokenizer_encode(tok, (const char *)data, size, &ids, &n, &err);

	if (!fuzz_utf8_valid(data, size)) {
		CHECK(ret == GM_EINVAL && err.msg[0]);
		free(ids);
		return 0;
	}
	if (ret) {
		fprintf(stderr, "valid UTF-8 refused: %s\n", err.msg);
		abort();
	}
	CHECK(ids && (size == 0) == (n == 0));
	for (i = 0; i < n; i++)
		CHECK(ids[i] >= 0 && (size_t)ids[i] < gm_tokenizer_n_tokens(tok));
	CHECK(!gm_tokenizer_decode(tok, ids, n, 0, &text, &err));
	CHECK(fuzz_utf8_valid((const uint8_t *)text.buf, text.len));
	if (is_nfc(data, size) && (text.len != size || memcmp(text.buf, data, size))) {
		fprintf(stderr, "decode(encode(x)) != x for NFC text of %zu bytes: got %zu bytes\n", size, text.len);
		abort();
	}
	for (i = 0; i < n; i++)
		CHECK(!gm_tokenizer_token_bytes(tok, ids[i], &pieces, &err));
	CHECK(pieces.len == text.len && !memcmp(pieces.buf, text.buf, text.len));
	CHECK(!gm_tokenizer_encode(tok, text.buf, text.len, &again, &m, &err));
	if (m != n || memcmp(again, ids, n * sizeof(*ids))) {
		fprintf(stderr, "encode(decode(encode(x))) != encode(x): %zu ids, then %zu\n", n, m);
		abort();
	}
	free(again);
	free(ids);
	gm_buf_release(&text);
	gm_buf_release(&pieces);
	return 0;
}
