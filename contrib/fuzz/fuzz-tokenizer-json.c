/*
 * fuzz-tokenizer-json.c - libFuzzer target for loading tokenizer.json
 * (gm_tokenizer_load_memory, libcore/text/tokenizer.c), the largest file
 * of a model that is parsed rather than mapped.
 *
 * Each input is one tokenizer.json document.  A refusal must explain
 * itself.  An accepted tokenizer has tokens, and a few fixed texts (plain
 * ASCII, accents, an emoji, digits, white space runs, the added tokens of
 * the seeds) must either be refused with a message or encode to ids in
 * [0, n_tokens) that decode to valid UTF-8, with and without the special
 * tokens; the first 4096 ids decode alone.
 * (A fuzzed vocabulary need not cover every byte, so the round trip is
 * checked by fuzz-tokenizer-text on the real tokenizer instead.)
 */
#include "base/buf.h"
#include "text/tokenizer.h"
#include "fuzz-common.h"

static const char *const texts[] = {
	"Hello, world!",
	"  two  spaces\n\nand\ttabs\r\n",
	"caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve \xf0\x9f\x98\x80 12345",
	"<|endoftext|><|im_start|>user\nhi<|im_end|>",
	"don't DON'T 3.14159",
	"",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_tokenizer *t = NULL;
	gm_error err = GM_ERROR_INIT;
	size_t i, j, n_tokens;
	int ret = gm_tokenizer_load_memory((const char *)data, size, "tokenizer.json", &t, &err);

	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(t == NULL);
		return 0;
	}
	fuzz_accepted("tokenizer.json");
	n_tokens = gm_tokenizer_n_tokens(t);
	CHECK(n_tokens > 0);
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		int32_t *ids = NULL;
		size_t n = 0;
		gm_buf out = GM_BUF_INIT;

		gm_error_clear(&err);
		ret = gm_tokenizer_encode(t, texts[i], strlen(texts[i]), &ids, &n, &err);
		if (ret) {
			CHECK_REFUSAL(ret, err);
			free(ids);
			continue;
		}
		for (j = 0; j < n; j++)
			CHECK(ids[j] >= 0 && (size_t)ids[j] < n_tokens);
		{
			/* add_special_tokens=True: the post-processor's tokens around the same ids */
			const int32_t *pre, *suf;
			size_t n_pre, n_suf, n2 = 0;
			int32_t *ids2 = NULL;

			gm_tokenizer_template(t, &pre, &n_pre, &suf, &n_suf);
			CHECK(!gm_tokenizer_encode_special(t, texts[i], strlen(texts[i]), &ids2, &n2, &err));
			CHECK(n2 == n_pre + n + n_suf);
			CHECK(!memcmp(ids2, pre, n_pre * sizeof(*ids2)));
			CHECK(!memcmp(ids2 + n_pre, ids, n * sizeof(*ids2)));
			CHECK(!memcmp(ids2 + n_pre + n, suf, n_suf * sizeof(*ids2)));
			for (j = 0; j < n_pre + n_suf; j++)
				CHECK((size_t)(j < n_pre ? pre[j] : suf[j - n_pre]) < n_tokens);
			free(ids2);
		}
		CHECK(!gm_tokenizer_decode(t, ids, n, 0, &out, &err));
		CHECK(fuzz_utf8_valid((const uint8_t *)out.buf, out.len));
		gm_buf_reset(&out);
		CHECK(!gm_tokenizer_decode(t, ids, n, 1, &out, &err));
		gm_buf_release(&out);
		free(ids);
	}
	/* Every id decodes alone (a bounded number of them: vocabularies can be large). */
	for (j = 0; j < n_tokens && j < 4096; j++) {
		gm_buf b = GM_BUF_INIT;
		int32_t id = (int32_t)j;

		CHECK(!gm_tokenizer_token_bytes(t, id, &b, &err));
		(void)gm_tokenizer_is_special(t, id);
		gm_buf_release(&b);
	}
	gm_tokenizer_free(t);
	return 0;
}
