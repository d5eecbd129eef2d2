/*
 * test-tokenizer.c - unit tests for the byte-level BPE tokenizer: the golden
 * encodings made with Hugging Face tokenizers for the Qwen3 tokenizer and
 * the small "pocket" one, special tokens, byte-level decoding with U+FFFD,
 * added-token flags on a hand-made tokenizer, and malformed files.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/json.h"
#include "tap.h"
#include "text/tokenizer.h"

#define QWEN3_DIR "t/fixtures/models/tiny-qwen3-vocab151k"
#define POCKET_DIR "t/fixtures/models/tiny-qwen3-f32"

/* The process's CPU time: what loading costs, not how busy the machine's other processes keep it waiting. */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *src_path(const char *rel)
{
	return gm_path_join(tap_srcdir(), rel);
}

static gm_tokenizer *load(const char *rel, double *secs)
{
	gm_error err = GM_ERROR_INIT;
	gm_tokenizer *t = NULL;
	char *path = src_path(rel);
	double t0 = now();
	int ret = gm_tokenizer_load(path, &t, &err);

	if (secs)
		*secs = now() - t0;
	if (ret)
		tap_diag("loading %s: %s", path, err.msg);
	free(path);
	return t;
}

static int same_ids(const int32_t *a, size_t na, json_object *golden)
{
	size_t i;

	if (na != json_object_array_length(golden))
		return 0;
	for (i = 0; i < na; i++)
		if (a[i] != json_object_get_int(json_object_array_get_idx(golden, i)))
			return 0;
	return 1;
}

static void diag_ids(const char *label, const int32_t *ids, size_t n)
{
	gm_buf b = GM_BUF_INIT;
	size_t i;

	for (i = 0; i < n && i < 40; i++)
		gm_buf_addf(&b, "%s%ld", i ? ", " : "", (long)ids[i]);
	if (n > 40)
		gm_buf_adds(&b, ", ...");
	tap_diag("  %s [%s]", label, b.buf);
	gm_buf_release(&b);
}

/* Encodes and decodes every line of a golden JSONL file. */
static void test_golden(const gm_tokenizer *t, const char *rel, const char *name)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf data = GM_BUF_INIT, out = GM_BUF_INIT;
	char *path = src_path(rel), *line, *next;
	size_t total = 0, enc_ok = 0, dec_ok = 0, shown = 0;

	if (!t || gm_read_file(path, &data, &err)) {
		ok(0, "%s golden encodings (%s)", name, t ? err.msg : "no tokenizer");
		ok(0, "%s golden decodings", name);
		free(path);
		return;
	}
	for (line = data.buf; *line; line = next) {
		json_object *obj, *text, *ids, *decoded;
		int32_t *got = NULL;
		size_t n = 0;
		int good;

		next = strchr(line, '\n');
		next = next ? next + 1 : line + strlen(line);
		if (next - line <= 1)
			continue;
		total++;
		if (gm_json_parse(line, (size_t)(next - line), path, &obj, &err)) {
			tap_diag("%s", err.msg);
			continue;
		}
		text = json_object_object_get(obj, "text");
		ids = json_object_object_get(obj, "ids");
		decoded = json_object_object_get(obj, "decoded");
		if (gm_tokenizer_encode(t, json_object_get_string(text), (size_t)json_object_get_string_len(text),
					&got, &n, &err)) {
			tap_diag("line %zu: %s", total, err.msg);
		} else if (same_ids(got, n, ids)) {
			enc_ok++;
		} else if (shown++ < 3) {
			tap_diag("line %zu: %.60s", total, json_object_to_json_string(text));
			diag_ids("got   ", got, n);
			tap_diag("  wanted %.300s", json_object_to_json_string(ids));
		}
		free(got);

		{
			size_t k, m = json_object_array_length(ids);
			int32_t *want = gm_xmalloc((m ? m : 1) * sizeof(*want));
			for (k = 0; k < m; k++)
				want[k] = json_object_get_int(json_object_array_get_idx(ids, k));
			gm_buf_reset(&out);
			good = !gm_tokenizer_decode(t, want, m, 0, &out, &err) &&
			       out.len == (size_t)json_object_get_string_len(decoded) &&
			       !memcmp(out.buf, json_object_get_string(decoded), out.len);
			free(want);
		}
		if (good)
			dec_ok++;
		else if (shown++ < 3)
			tap_diag("line %zu: decoded to %.80s", total, out.buf);
		json_object_put(obj);
	}
	ok(total > 300 && enc_ok == total, "%s: %zu/%zu texts encode to the golden ids", name, enc_ok, total);
	ok(total > 300 && dec_ok == total, "%s: %zu/%zu golden ids decode to the golden text", name, dec_ok,
	   total);
	gm_buf_release(&out);
	gm_buf_release(&data);
	free(path);
}

/* Encodes s and compares with the expected ids. */
static int encodes_to(const gm_tokenizer *t, const char *s, const int32_t *want, size_t n_want)
{
	gm_error err = GM_ERROR_INIT;
	int32_t *ids;
	size_t n;
	int same;

	if (gm_tokenizer_encode(t, s, strlen(s), &ids, &n, &err)) {
		tap_diag("encoding \"%s\": %s", s, err.msg);
		return 0;
	}
	same = n == n_want && !memcmp(ids, want, n * sizeof(*ids));
	if (!same)
		diag_ids("got", ids, n);
	free(ids);
	return same;
}

#define ENCODES_TO(t, s, ...)                                                                    \
	encodes_to(t, s, (const int32_t[]){ __VA_ARGS__ },                                       \
		   sizeof((const int32_t[]){ __VA_ARGS__ }) / sizeof(int32_t))

static int decodes_to(const gm_tokenizer *t, const int32_t *ids, size_t n, int skip, const char *want,
		      size_t want_len)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf out = GM_BUF_INIT;
	int same;

	gm_buf_adds(&out, "|");
	same = !gm_tokenizer_decode(t, ids, n, skip, &out, &err) && out.len == want_len + 1 &&
	       !memcmp(out.buf + 1, want, want_len);
	if (!same)
		tap_diag("decoded to \"%s\" (%s)", out.buf, err.msg);
	gm_buf_release(&out);
	return same;
}

#define DECODES_TO(t, skip, want, ...)                                                          \
	decodes_to(t, (const int32_t[]){ __VA_ARGS__ },                                          \
		   sizeof((const int32_t[]){ __VA_ARGS__ }) / sizeof(int32_t), skip, want,     \
		   sizeof(want) - 1)

static void test_qwen3_tokens(const gm_tokenizer *t)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	int32_t byte_id[256];
	int32_t i, im_start, im_end, think, hi;
	int ret;

	ok(gm_tokenizer_n_tokens(t) == 151669, "151669 ids (151643 model tokens, 26 added)");
	im_start = gm_tokenizer_token_id(t, "<|im_start|>");
	im_end = gm_tokenizer_token_id(t, "<|im_end|>");
	think = gm_tokenizer_token_id(t, "<think>");
	ok(im_start == 151644 && im_end == 151645 && think == 151667 &&
	   gm_tokenizer_token_id(t, "</think>") == 151668 && gm_tokenizer_token_id(t, "<|endoftext|>") == 151643,
	   "token_id finds the added tokens");
	ok(gm_tokenizer_token_id(t, "hello") == 14990 && gm_tokenizer_token_id(t, "\xc4\xa0hello") == 23811 &&
	   gm_tokenizer_token_id(t, " hello") == -1 && gm_tokenizer_token_id(t, "<|im_end|") == -1,
	   "token_id finds model tokens in their byte-level form, else -1");
	ok(gm_tokenizer_is_special(t, im_start) && gm_tokenizer_is_special(t, im_end) &&
	   gm_tokenizer_is_special(t, 151643) && !gm_tokenizer_is_special(t, think) &&
	   !gm_tokenizer_is_special(t, 151657) && !gm_tokenizer_is_special(t, 14990) &&
	   !gm_tokenizer_is_special(t, -1) && !gm_tokenizer_is_special(t, 151669),
	   "is_special: <|im_*|> and <|endoftext|> are, <think> and <tool_call> are not");

	ok(ENCODES_TO(t, "<|im_start|>", 151644) && ENCODES_TO(t, "<think>", 151667) &&
	   ENCODES_TO(t, "<|im_end|><|im_end|>", 151645, 151645),
	   "added tokens encode to their ids");
	hi = 13048; /* "Hi" */
	ok(ENCODES_TO(t, "<|im_start|>user\nHi<|im_end|>\n", 151644, 872, 198, hi, 151645, 198),
	   "added tokens are matched in running text");
	{
		int32_t *ids;
		size_t n, k;
		int found = 0;
		ret = gm_tokenizer_encode(t, "<|im_end|<|im_start", 19, &ids, &n, &err);
		for (k = 0; !ret && k < n; k++)
			found |= ids[k] >= 151643;
		ok(!ret && n > 2 && !found, "incomplete added tokens are plain text");
		free(ids);
	}

	/* Every byte has a one-byte token. */
	for (i = 0; i < 256; i++)
		byte_id[i] = -1;
	for (i = 0; i < 151643; i++) {
		gm_buf_reset(&b);
		if (!gm_tokenizer_token_bytes(t, i, &b, &err) && b.len == 1)
			byte_id[(unsigned char)b.buf[0]] = i;
	}
	for (i = 0; i < 256 && byte_id[i] >= 0; i++)
		;
	ok(i == 256, "each of the 256 bytes is a token");
	ok(byte_id[0xf0] == gm_tokenizer_token_id(t, "\xc3\xb0") && byte_id[' '] == 220 && byte_id['\n'] == 198,
	   "byte tokens are the GPT-2 byte-level alphabet");
	gm_buf_reset(&b);
	ret = gm_tokenizer_token_bytes(t, byte_id[0xf0], &b, &err);
	ok(!ret && b.len == 1 && (unsigned char)b.buf[0] == 0xf0, "token_bytes of a partial UTF-8 token");
	{
		int32_t *ids;
		size_t n, k;
		const char *s = "\xf0\x9f\x98\x80\xe4\xb8\xad"; /* 😀中 */
		ret = gm_tokenizer_encode(t, s, strlen(s), &ids, &n, &err);
		gm_buf_reset(&b);
		for (k = 0; !ret && k < n; k++)
			ret = gm_tokenizer_token_bytes(t, ids[k], &b, &err);
		ok(!ret && n >= 2 && b.len == strlen(s) && !memcmp(b.buf, s, b.len),
		   "token_bytes of the %zu tokens of an emoji join to its UTF-8", n);
		free(ids);
	}
	gm_buf_reset(&b);
	ret = gm_tokenizer_token_bytes(t, im_end, &b, &err);
	ok(!ret && !strcmp(b.buf, "<|im_end|>"), "token_bytes of an added token is its content");
	gm_buf_reset(&b);
	ret = gm_tokenizer_token_bytes(t, 151900, &b, &err);
	ok(!ret && b.len == 0, "token_bytes of a padding id is empty");
	ret = gm_tokenizer_token_bytes(t, -3, &b, &err);
	ok_error(ret, &err, GM_EINVAL, "negative", "token_bytes of a negative id is an error");

	/* Decoding. */
	ok(DECODES_TO(t, 0, "<|im_start|>user\nHi<|im_end|><think>", 151644, 872, 198, hi, 151645, 151667) &&
	   DECODES_TO(t, 1, "user\nHi<think>", 151644, 872, 198, hi, 151645, 151667),
	   "decode with skip_special drops <|im_*|> but keeps <think>");
	ok(DECODES_TO(t, 0, "\xef\xbf\xbd", byte_id[0xf0]) &&
	   DECODES_TO(t, 0, "\xef\xbf\xbd" "A", byte_id[0xf0], byte_id[0x9f], byte_id[0x98], byte_id['A']) &&
	   DECODES_TO(t, 0, "\xef\xbf\xbd\xef\xbf\xbd", byte_id[0xc0], byte_id[0x80]) &&
	   DECODES_TO(t, 0, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", byte_id[0xed], byte_id[0xa0], byte_id[0x80]) &&
	   DECODES_TO(t, 0, "x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", byte_id['x'], byte_id[0xf4],
		      byte_id[0x90], byte_id[0x80], byte_id[0x80]) &&
	   DECODES_TO(t, 0, "\xef\xbf\xbd", byte_id[0xe2], byte_id[0x82]) &&
	   DECODES_TO(t, 0, "\xe2\x82\xac", byte_id[0xe2], byte_id[0x82], byte_id[0xac]),
	   "invalid UTF-8 decodes to U+FFFD per maximal subpart, as from_utf8_lossy");
	ok(DECODES_TO(t, 0, "Hi", 151700, hi, 151935), "padding ids decode to nothing");
	{
		int32_t neg = -1;
		gm_buf_reset(&b);
		ret = gm_tokenizer_decode(t, &neg, 1, 0, &b, &err);
		ok_error(ret, &err, GM_EINVAL, "negative", "decoding a negative id is an error");
	}
	{
		int32_t *ids = NULL;
		size_t n = 7;
		ret = gm_tokenizer_encode(t, "ok\xc3(", 4, &ids, &n, &err);
		ok_error(ret, &err, GM_EINVAL, "not valid UTF-8 (at byte 2)", "invalid UTF-8 text is refused");
		ok(!ids && !n, "nothing is returned on error");
		ret = gm_tokenizer_encode(t, "", 0, &ids, &n, &err);
		ok(!ret && ids && n == 0, "the empty text encodes to no ids");
		free(ids);
	}
	gm_buf_release(&b);
}

/* Encodes a and b and checks that they give the same ids. */
static int same_encoding(const gm_tokenizer *t, const char *a, const char *b)
{
	gm_error err = GM_ERROR_INIT;
	int32_t *ia = NULL, *ib = NULL;
	size_t na = 0, nb = 0;
	int same;

	same = !gm_tokenizer_encode(t, a, strlen(a), &ia, &na, &err) &&
	       !gm_tokenizer_encode(t, b, strlen(b), &ib, &nb, &err) && na == nb &&
	       !memcmp(ia, ib, na * sizeof(*ia));
	if (!same) {
		diag_ids("a:", ia, na);
		diag_ids("b:", ib, nb);
	}
	free(ia);
	free(ib);
	return same;
}

static void test_nfc(const gm_tokenizer *t)
{
	ok(same_encoding(t, "Cafe\xcc\x81 and cre\xcc\x80me", "Caf\xc3\xa9 and cr\xc3\xa8me"),
	   "NFC: a combining accent composes with its letter");
	ok(same_encoding(t, "\xea\xb0\x80\xe1\x86\xa8 \xe3\x81\x8b\xe3\x82\x99",
			 "\xea\xb0\x81 \xe3\x81\x8c"),
	   "NFC: a Hangul syllable takes a trailing jamo, a kana its voicing mark");
	ok(same_encoding(t, "\xe2\x84\xab x\xcc\xa3\xcc\x87 \xe4\xb8\xad\xcc\x81",
			 "\xc3\x85 x\xcc\xa3\xcc\x87 \xe4\xb8\xad\xcc\x81"),
	   "NFC: singletons are replaced, marks in canonical order kept");
	ok(same_encoding(t, "a\xcc\x87\xcc\xa3", "a\xcc\xa3\xcc\x87") &&
	   same_encoding(t, "a\xcc\x87\xcc\xa3", "\xe1\xba\xa1\xcc\x87"),
	   "NFC: marks are reordered by combining class, then composed");
}

struct thread_job {
	const gm_tokenizer *t;
	const char *text;
	size_t len;
	const int32_t *want;
	size_t n_want;
	int same;
};

static void *thread_encode(void *arg)
{
	struct thread_job *job = arg;
	gm_error err = GM_ERROR_INIT;
	int32_t *ids;
	size_t n;
	int i;

	job->same = 1;
	for (i = 0; i < 3 && job->same; i++) {
		if (gm_tokenizer_encode(job->t, job->text, job->len, &ids, &n, &err)) {
			job->same = 0;
			break;
		}
		job->same = n == job->n_want && !memcmp(ids, job->want, n * sizeof(*ids));
		free(ids);
	}
	return NULL;
}

/* Several threads encode with one tokenizer at once. */
static void test_threads(const gm_tokenizer *t, const char *text, size_t len)
{
	gm_error err = GM_ERROR_INIT;
	struct thread_job jobs[4];
	pthread_t th[4];
	int started[4];
	int32_t *want;
	size_t n, i;
	int all = 1;

	if (gm_tokenizer_encode(t, text, len, &want, &n, &err)) {
		ok(0, "threads: %s", err.msg);
		return;
	}
	for (i = 0; i < 4; i++) {
		jobs[i] = (struct thread_job){ t, text, len, want, n, 0 };
		started[i] = !pthread_create(&th[i], NULL, thread_encode, &jobs[i]);
	}
	for (i = 0; i < 4; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
		all &= started[i] && jobs[i].same;
	}
	ok(all, "four threads encoding at once agree");
	free(want);
}

static void test_speed(const gm_tokenizer *t)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf text = GM_BUF_INIT, data = GM_BUF_INIT, out = GM_BUF_INIT;
	char *path = src_path("t/fixtures/tokenizers/qwen3-golden.jsonl"), *line, *next;
	int32_t *ids = NULL;
	size_t n = 0;
	double t0, t1, t2;
	int ret;

	/* The golden texts (NFC-normalized: as decoded), repeated to about 4 MB. */
	if (gm_read_file(path, &data, &err)) {
		ok(0, "%s", err.msg);
		free(path);
		return;
	}
	while (text.len < 4000000) {
		for (line = data.buf; *line; line = next) {
			json_object *obj, *s;
			next = strchr(line, '\n');
			next = next ? next + 1 : line + strlen(line);
			if (gm_json_parse(line, (size_t)(next - line), path, &obj, &err))
				continue;
			s = json_object_object_get(obj, "decoded");
			gm_buf_add(&text, json_object_get_string(s), (size_t)json_object_get_string_len(s));
			gm_buf_addch(&text, '\n');
			json_object_put(obj);
		}
	}
	{
		size_t cut = 300000;
		while (((unsigned char)text.buf[cut] & 0xc0) == 0x80)
			cut--;
		test_threads(t, text.buf, cut);
	}
	t0 = now();
	ret = gm_tokenizer_encode(t, text.buf, text.len, &ids, &n, &err);
	t1 = now();
	if (!ret)
		ret = gm_tokenizer_decode(t, ids, n, 0, &out, &err);
	t2 = now();
	ok(!ret && out.len == text.len && !memcmp(out.buf, text.buf, out.len),
	   "encodes and decodes %.1f MB of text back to itself", text.len / 1e6);
	tap_diag("encode: %zu tokens in %.3f s, %.1f MB/s; decode: %.3f s, %.1f MB/s", n, t1 - t0,
		 text.len / 1e6 / (t1 - t0), t2 - t1, text.len / 1e6 / (t2 - t1));
	free(ids);

	/* Long runs stress the regex (JIT stack) and the BPE queue. */
	gm_buf_reset(&text);
	while (text.len < 1000000)
		gm_buf_adds(&text, "                                                                ");
	gm_buf_adds(&text, "x");
	ret = gm_tokenizer_encode(t, text.buf, text.len, &ids, &n, &err);
	ok(!ret && n > 1000, "a megabyte of spaces encodes (%zu tokens)%s%s", n, ret ? ": " : "", ret ? err.msg : "");
	free(ids);
	/*
	 * One pathological word (no pre-tokenizer split, one merge after
	 * another): 1 MB must cost about 4 times 250 kB (n log n, and caches:
	 * 4.5 to 5.6 measured on Zen 5), not 16 (quadratic).  CPU time, best
	 * of 3 for the small one.
	 */
	{
		double t_small = 1e9, t_big;
		size_t n_small = 0;
		int r;

		for (r = 0; r < 3; r++) {
			gm_buf_reset(&text);
			while (text.len < 250000)
				gm_buf_adds(&text, "abababababababababababababababab");
			t0 = now();
			ret = gm_tokenizer_encode(t, text.buf, text.len, &ids, &n_small, &err);
			t1 = now() - t0;
			t_small = t1 < t_small ? t1 : t_small;
			if (!ret)
				free(ids);
		}
		while (text.len < 1000000)
			gm_buf_adds(&text, "abababababababababababababababab");
		t0 = now();
		ret = gm_tokenizer_encode(t, text.buf, text.len, &ids, &n, &err);
		t_big = now() - t0;
		ok(!ret && n > 100 && n_small > 25, "a 1 MB word encodes (%zu tokens, %.3f s; 250 kB: %.3f s)", n, t_big,
		   t_small);
		ok(t_big < 10 * t_small + 0.05, "a 1 MB word costs less than 10 times a 250 kB one (%.1fx): not quadratic",
		   t_big / t_small);
		if (!ret)
			free(ids);
	}

	gm_buf_release(&text);
	gm_buf_release(&data);
	gm_buf_release(&out);
	free(path);
}

/* A hand-made tokenizer.json; MERGES and EXTRA are spliced in. */
static int load_mini(const char *merges, const char *model_extra, const char *added, gm_tokenizer **t,
		     gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	int ret;

	gm_buf_addf(&b,
		    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
		    " \"added_tokens\": [%s],\n"
		    " \"normalizer\": {\"type\": \"NFC\"},\n"
		    " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true},\n"
		    " \"post_processor\": null,\n"
		    " \"decoder\": {\"type\": \"ByteLevel\"},\n"
		    " \"model\": {\"type\": \"BPE\", %s \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"\\u0120\": 3,"
		    " \"ab\": 4, \"abc\": 5, \"\\u0120a\": 6, \"h\": 9, \"i\": 10}, \"merges\": [%s]}}",
		    added, model_extra, merges);
	ret = gm_tokenizer_load_memory(b.buf, b.len, "mini.json", t, err);
	gm_buf_release(&b);
	return ret;
}

static void test_mini(void)
{
	static const char added[] =
		"{\"id\": 7, \"content\": \"<x>\", \"lstrip\": true, \"rstrip\": true, \"special\": true,"
		" \"normalized\": false, \"single_word\": false},"
		"{\"id\": 8, \"content\": \"hi\", \"single_word\": true, \"special\": false, \"normalized\": false,"
		" \"lstrip\": false, \"rstrip\": false},"
		"{\"id\": 11, \"content\": \"\\u00c5\", \"special\": false, \"normalized\": true}";
	gm_error err = GM_ERROR_INIT;
	gm_tokenizer *t = NULL, *t2 = NULL;
	int ret;

	ret = load_mini("\"a b\", \"ab c\", \"\\u0120 a\"", "", added, &t, &err);
	ok(!ret, "a hand-made tokenizer loads%s%s", ret ? ": " : "", ret ? err.msg : "");
	ret = load_mini("[\"a\", \"b\"], [\"ab\", \"c\"], [\"\\u0120\", \"a\"]", "", added, &t2, &err);
	ok(!ret, "merges may be given as pairs%s%s", ret ? ": " : "", ret ? err.msg : "");
	if (!t || !t2) {
		gm_tokenizer_free(t);
		gm_tokenizer_free(t2);
		return;
	}
	ok(gm_tokenizer_n_tokens(t) == 12, "ids up to the largest added one");
	ok(ENCODES_TO(t, "ab abc", 4, 3, 5) && ENCODES_TO(t2, "ab abc", 4, 3, 5) && ENCODES_TO(t, "abab", 4, 4),
	   "merges apply by rank, as strings or as pairs");
	ok(ENCODES_TO(t, "a <x> b", 0, 7, 1) && ENCODES_TO(t, "a<x>b", 0, 7, 1) &&
	   ENCODES_TO(t, "a   <x>", 0, 7), "lstrip and rstrip take in the spaces around an added token");
	ok(ENCODES_TO(t, "hi ahi hi", 8, 6, 9, 10, 3, 8) && ENCODES_TO(t, "hic", 9, 10, 2),
	   "a single_word added token is matched only as a whole word");
	ok(ENCODES_TO(t, "aA\xcc\x8a" "b\xe2\x84\xab", 0, 11, 1, 11) && gm_tokenizer_token_id(t, "\xc3\x85") == 11,
	   "a normalized added token is matched in the NFC-normalized text");
	/* tokenizers' ByteLevel decoder maps its characters as bytes: U+00C5 is
	 * the byte 0xC5, alone an invalid sequence. */
	ok(DECODES_TO(t, 0, "a\xef\xbf\xbd", 0, 11), "it decodes as tokenizers decodes it");
	ok(ENCODES_TO(t, "axyb", 4), "bytes without a token are dropped before merging (no unk_token)");
	/* fuzz-tokenizer-json's finding: a word of no ids, the first cached, took an offset from a NULL cache (UBSan) */
	ok(ENCODES_TO(t, "xy ab xy ab", 3, 4, 3, 3, 4), "a word made only of bytes without a token gives no ids, also from the cache");
	ok(DECODES_TO(t, 0, "a<x>b", 0, 7, 1) && DECODES_TO(t, 1, "ab", 0, 7, 1),
	   "an added special token decodes unless skipped");
	ok(gm_tokenizer_token_id(t, "<x>") == 7 && gm_tokenizer_is_special(t, 7) && !gm_tokenizer_is_special(t, 8) &&
	   !gm_tokenizer_is_special(t, 5), "token_id and is_special on added tokens");
	gm_tokenizer_free(t);
	gm_tokenizer_free(t2);

	ret = load_mini("\"a b\"", "\"ignore_merges\": true,", "", &t, &err);
	ok(!ret && ENCODES_TO(t, "abc", 5) && ENCODES_TO(t, "abcab", 4, 2, 4),
	   "with ignore_merges a word in the vocabulary is one token");
	gm_tokenizer_free(t);
	ret = load_mini("\"a b\"", "\"ignore_merges\": false,", "", &t, &err);
	ok(!ret && ENCODES_TO(t, "abc", 4, 2), "without ignore_merges it is merged");
	gm_tokenizer_free(t);
	ret = load_mini("\"a b\"", "\"unk_token\": \"c\", \"fuse_unk\": true,", "", &t, &err);
	ok(!ret && ENCODES_TO(t, "axyb", 0, 2, 1), "unknown bytes become the (fused) unk_token");
	gm_tokenizer_free(t);
}

static void test_errors(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_tokenizer *t = NULL;
	char *path;
	int ret;

#define LOAD(s) gm_tokenizer_load_memory(s, strlen(s), "bad.json", &t, &err)
/* The parts a byte-level BPE tokenizer.json needs. */
#define DEC "\"decoder\": {\"type\": \"ByteLevel\"}, "
#define PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, "
#define BPE(vocab, merges) "\"model\": {\"type\": \"BPE\", \"vocab\": {" vocab "}, \"merges\": [" merges "]}"
#define SPLIT(re, behavior)                                                                        \
	"\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"" re "\"}, "        \
	"\"behavior\": \"" behavior "\"}, "
	ret = LOAD("{\"version\": \"1.0\"}");
	ok_error(ret, &err, GM_EFORMAT, "bad.json: no \"model\"", "a file without model is refused");
	ok(!t, "nothing is returned on error");
	ret = LOAD("{" DEC PRE "\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "model type 'WordPiece' is not supported", "other models are refused");
	ret = LOAD("{" DEC PRE BPE("\"a\": 0", "\"a b\"") "}");
	ok_error(ret, &err, GM_EFORMAT, "model.merges[0] ('a' + 'b'): 'b' is not in the vocabulary",
		 "a merge of unknown tokens is refused");
	ret = LOAD("{" DEC PRE BPE("\"a\": 0, \"b\": 1", "\"a b\"") "}");
	ok_error(ret, &err, GM_EFORMAT, "'ab' is not in the vocabulary", "a merge must make a known token");
	ret = LOAD("{" DEC PRE BPE("\"a\": 0", "\"ab\"") "}");
	ok_error(ret, &err, GM_EFORMAT, "is not two tokens", "a merge string without a space is refused");
	ret = LOAD("{" DEC PRE BPE("\"a\": 0, \"b\": 1, \"ab\": 2", "\"a b b\"") "}");
	ok_error(ret, &err, GM_EFORMAT, "is not two tokens", "a merge string of three tokens is refused");
	ret = LOAD("{" DEC PRE BPE("\"a\": 0, \"b\": 1, \"ab\": 2", "\"#version: 0.2\", \"a b\"") "}");
	ok(!ret && ENCODES_TO(t, "ab", 2), "a #version line in the merges is skipped");
	gm_tokenizer_free(t);
	ret = LOAD("{" DEC PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {}}}");
	ok_error(ret, &err, GM_EFORMAT, "model.merges must be an array", "a BPE model without merges is refused");
	ret = LOAD("{" DEC PRE BPE("\"a\": 0", "[\"a\"]") "}");
	ok_error(ret, &err, GM_EFORMAT, "must be a string", "a merge pair of one token is refused");
	ret = LOAD("{" DEC PRE BPE("\"a\": \"x\"", "") "}");
	ok_error(ret, &err, GM_EFORMAT, "the id of 'a' must be an integer", "a vocabulary id must be an integer");
	ret = LOAD("{\"normalizer\": {\"type\": \"NFKC\"}, " DEC PRE BPE("", "") "}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "normalizer 'NFKC' is not supported", "other normalizers are refused");
	ret = LOAD("{" DEC "\"pre_tokenizer\": {\"type\": \"Metaspace\"}, " BPE("", "") "}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "pre-tokenizer 'Metaspace' is not supported",
		 "other pre-tokenizers are refused");
	ret = LOAD("{" DEC SPLIT("\\\\s+", "Removed") BPE("", "") "}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "behavior 'Removed'", "Split behaviors other than Isolated are refused");
	ret = LOAD("{" DEC SPLIT("(", "Isolated") BPE("", "") "}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "regex /(/ is not supported by PCRE2", "a bad regex is refused");
	ret = LOAD("{" DEC SPLIT("\\\\s+", "Isolated") BPE("", "") "}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "without ByteLevel", "a pre-tokenizer without ByteLevel is refused");
	ret = LOAD("{\"decoder\": {\"type\": \"WordPiece\"}, " PRE BPE("", "") "}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "decoder 'WordPiece' is not supported", "other decoders are refused");
	ret = LOAD("{" DEC PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"byte_fallback\": true}}");
	ok_error(ret, &err, GM_EUNSUPPORTED, "byte_fallback", "byte_fallback is refused");
	ret = LOAD("{\"model\": ");
	ok_error(ret, &err, GM_EFORMAT, "bad.json: invalid JSON", "invalid JSON is refused");
	ret = LOAD("{" DEC PRE "\"added_tokens\": [{\"id\": 0, \"content\": \"\"}], " BPE("", "") "}");
	ok_error(ret, &err, GM_EFORMAT, "added_tokens[0] has an empty content", "an empty added token is refused");
	ret = LOAD("{" DEC PRE BPE("", "") "}");
	ok(!ret, "an empty vocabulary loads%s%s", ret ? ": " : "", ret ? err.msg : "");
	gm_tokenizer_free(t);
	/* the post-processor's special tokens (Llama 3: BOS $A, inside a Sequence with ByteLevel) */
#define TPL(single, specials)                                                                           \
	"\"post_processor\": {\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, "       \
	"{\"type\": \"TemplateProcessing\", \"single\": [" single "], \"special_tokens\": {" specials "}}]}, "
#define SPECIAL(name) "{\"SpecialToken\": {\"id\": \"" name "\", \"type_id\": 0}}"
#define SEQ_A "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}"
	ret = LOAD("{" DEC PRE TPL(SPECIAL("<s>") ", " SEQ_A ", " SPECIAL("</s>"),
				   "\"<s>\": {\"id\": \"<s>\", \"ids\": [3], \"tokens\": [\"<s>\"]}, "
				   "\"</s>\": {\"id\": \"</s>\", \"ids\": [4], \"tokens\": [\"</s>\"]}")
		   BPE("\"a\": 0, \"b\": 1, \"ab\": 2, \"<s>\": 3, \"</s>\": 4", "\"a b\"") "}");
	ok(!ret, "a TemplateProcessing post-processor loads%s%s", ret ? ": " : "", ret ? err.msg : "");
	if (!ret) {
		int32_t *ids = NULL;
		size_t n = 0;

		ok(ENCODES_TO(t, "ab", 2), "encode adds no special token");
		ret = gm_tokenizer_encode_special(t, "abab", 4, &ids, &n, &err);
		ok(!ret && n == 4 && ids[0] == 3 && ids[1] == 2 && ids[2] == 2 && ids[3] == 4,
		   "encode_special puts the template's tokens around the text (add_special_tokens=True)");
		free(ids);
		gm_tokenizer_free(t);
	}
	ret = LOAD("{" DEC PRE TPL(SPECIAL("<s>") ", " SEQ_A, "\"<s>\": {\"id\": \"<s>\", \"ids\": [9]}")
		   BPE("\"a\": 0", "") "}");
	ok_error(ret, &err, GM_EFORMAT, "special token id 9 is not in the vocabulary",
		 "a template token outside the vocabulary is refused");
	ret = LOAD("{" DEC PRE TPL(SPECIAL("<s>") ", " SEQ_A, "") BPE("\"a\": 0", "") "}");
	ok_error(ret, &err, GM_EFORMAT, "special token '<s>' has no ids", "a template token without ids is refused");
#undef TPL
#undef SPECIAL
#undef SEQ_A
#undef SPLIT
#undef BPE
#undef PRE
#undef DEC
#undef LOAD

	path = src_path("t/fixtures/no-such-dir/tokenizer.json");
	ret = gm_tokenizer_load(path, &t, &err);
	ok_error(ret, &err, GM_ENOENT, "no-such-dir/tokenizer.json", "a missing file is GM_ENOENT");
	free(path);
}

int main(void)
{
	gm_tokenizer *qwen3, *pocket;
	double secs;

	qwen3 = load(QWEN3_DIR, &secs);
	ok(qwen3 != NULL, "loads the Qwen3 tokenizer from its model directory");
	if (getenv("LD_PRELOAD") && strstr(getenv("LD_PRELOAD"), "vgpreload"))
		ok(1, "loading the 151k-token tokenizer.json is fast # SKIP under valgrind");
	else
		ok(secs < 3.0, "loading the 151k-token tokenizer.json is fast (%.3f s)", secs);
	tap_diag("Qwen3 tokenizer.json (11 MB) loaded in %.0f ms of CPU time", secs * 1000);
	pocket = load(POCKET_DIR "/tokenizer.json", NULL);
	ok(pocket != NULL, "loads the pocket tokenizer from its file");

	test_golden(qwen3, "t/fixtures/tokenizers/qwen3-golden.jsonl", "Qwen3");
	test_golden(pocket, "t/fixtures/tokenizers/pocket-golden.jsonl", "pocket");
	if (qwen3)
		test_qwen3_tokens(qwen3);
	if (pocket) {
		int32_t think = gm_tokenizer_token_id(pocket, "<think>");
		ok(think == 4094 && gm_tokenizer_is_special(pocket, think) && gm_tokenizer_n_tokens(pocket) == 4096,
		   "pocket: <think> is a special token there");
		ok(DECODES_TO(pocket, 1, "hello", 4092, 257, 276, 78, 4094, 4093),
		   "pocket: skip_special drops its <think>");
	}
	if (qwen3) {
		test_nfc(qwen3);
		test_speed(qwen3);
	}
	test_mini();
	test_errors();
	gm_tokenizer_free(qwen3);
	gm_tokenizer_free(pocket);
	return tap_done();
}
