/*
 * test-sampler.c - the sampler chain stage by stage against hand-computed
 * expectations, seeded determinism, the streaming UTF-8 decoder and the
 * stop-string matcher (sampler.h, generate.h).
 */
#include <math.h>
#include <stdint.h>

#include "engine/generate.h"
#include "engine/sampler.h"
#include "tap.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int near(double a, double b)
{
	return fabs(a - b) <= 1e-6 * (1 + fabs(b));
}

/* The candidates' ids, in order, as "3,2,1". */
static const char *ids_of(const gm_candidates *c)
{
	static char s[256];
	size_t i, n = 0;

	s[0] = '\0';
	for (i = 0; i < c->n && n < sizeof(s) - 16; i++)
		n += (size_t)snprintf(s + n, sizeof(s) - n, "%s%d", i ? "," : "", c->items[i].id);
	return s;
}

/* Sorted ids, for stages that keep id order. */
static const char *sorted_ids_of(gm_candidates *c)
{
	gm_candidates_sort(c);
	return ids_of(c);
}

static void test_params(void)
{
	gm_generation_config gen;
	gm_sampler_params p;
	gm_error err = GM_ERROR_INIT;

	gm_generation_config_defaults(&gen, NULL);
	gm_sampler_params_init(&p);
	p.seed = 42;
	gen.temperature = 0.7;
	gen.top_k = 20;
	gen.top_p = 0.8;
	gen.min_p = 0.05;
	gen.repetition_penalty = 1.1;
	gm_sampler_params_from_generation(&p, &gen);
	ok(p.temperature == 0.0 && p.top_k == 20 && p.top_p == 0.8 && p.min_p == 0.05 &&
	   p.repetition_penalty == 1.1 && p.seed == 42, "do_sample false: greedy, other values kept, seed kept");
	gen.do_sample = 1;
	gm_sampler_params_from_generation(&p, &gen);
	ok(p.temperature == 0.7, "do_sample true: the model's temperature");
	ok(gm_sampler_params_check(&p, &err) == 0, "valid parameters pass");

	p.temperature = -1;
	ok_error(gm_sampler_params_check(&p, &err), &err, GM_EINVAL, "temperature must be a number >= 0",
		 "negative temperature refused");
	p.temperature = 1;
	p.top_p = 0;
	ok_error(gm_sampler_params_check(&p, &err), &err, GM_EINVAL, "top-p must be > 0 and <= 1", "top-p 0 refused");
	p.top_p = 1;
	p.min_p = 1.5;
	ok_error(gm_sampler_params_check(&p, &err), &err, GM_EINVAL, "min-p must be between 0 and 1",
		 "min-p 1.5 refused");
	p.min_p = 0;
	p.repetition_penalty = 0;
	ok_error(gm_sampler_params_check(&p, &err), &err, GM_EINVAL, "repetition penalty must be a number > 0",
		 "penalty 0 refused");
	p.repetition_penalty = 1;
	p.top_k = -1;
	ok_error(gm_sampler_params_check(&p, &err), &err, GM_EINVAL, "top-k must be >= 0", "negative top-k refused");
}

static void test_penalty_and_argmax(void)
{
	float l[] = { 2, -2, 0, 1, 3 };
	const int32_t seen[] = { 0, 1, 2, 0, 0, -5, 99 };
	float ties[] = { 1, 3, 3, 2 };
	float nan_first[] = { NAN, -1, -0.5f };

	gm_sample_repetition_penalty(l, N(l), seen, N(seen), 2.0f);
	ok(l[0] == 1 && l[1] == -4 && l[2] == 0 && l[3] == 1 && l[4] == 3,
	   "penalty: positive divided, negative multiplied, 0 stays, once per distinct id, others untouched");
	ok(gm_sample_argmax(ties, N(ties)) == 1, "argmax: the first of equal maxima");
	ok(gm_sample_argmax(nan_first, N(nan_first)) == 2, "argmax: NaN never wins");
	ok(gm_sample_argmax(ties, 0) == -1, "argmax of nothing: -1");
}

static void test_temperature_top_k(void)
{
	const float l[] = { 1, 5, 3, 5, 2 };
	const float flat[] = { 1, 4, 4, 4, 0, -INFINITY };
	gm_candidates c = GM_CANDIDATES_INIT;

	gm_candidates_set(&c, flat, N(flat));
	ok(c.n == 5, "-inf logits are not candidates");
	gm_candidates_set(&c, l, N(l));
	gm_candidates_temperature(&c, 0.5f);
	ok(c.items[0].logit == 2 && c.items[1].logit == 10 && c.items[4].logit == 4, "temperature 0.5 doubles logits");
	gm_candidates_set(&c, l, N(l));
	gm_candidates_temperature(&c, 2.0f);
	ok(c.items[2].logit == 1.5f, "temperature 2 halves logits");

	gm_candidates_set(&c, l, N(l));
	gm_candidates_top_k(&c, 2);
	ok(!strcmp(sorted_ids_of(&c), "1,3"), "top-k 2 keeps the two largest (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, N(l));
	gm_candidates_top_k(&c, 3);
	ok(!strcmp(ids_of(&c), "1,2,3"), "top-k 3 keeps id order (got %s)", ids_of(&c));
	gm_candidates_set(&c, flat, N(flat));
	gm_candidates_top_k(&c, 2);
	ok(!strcmp(ids_of(&c), "1,2,3"), "top-k 2 keeps every tie of the 2nd value (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, N(l));
	gm_candidates_sort(&c);
	gm_candidates_top_k(&c, 1);
	ok(!strcmp(ids_of(&c), "1,3"), "top-k 1 on sorted candidates keeps ties too (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, N(l));
	gm_candidates_top_k(&c, 0);
	ok(c.n == 5, "top-k 0 is off");
	gm_candidates_top_k(&c, 9);
	ok(c.n == 5, "top-k past the vocabulary keeps all");
	gm_candidates_release(&c);
}

static void test_top_p_min_p(void)
{
	/* probabilities 0.1, 0.2, 0.3, 0.4 */
	float l[4];
	const double p[] = { 0.1, 0.2, 0.3, 0.4 };
	double probs[4];
	gm_candidates c = GM_CANDIDATES_INIT;
	size_t i;

	for (i = 0; i < 4; i++)
		l[i] = (float)log(p[i]);

	gm_candidates_set(&c, l, 4);
	gm_candidates_softmax(&c, probs);
	ok(near(probs[0], 0.1) && near(probs[3], 0.4), "softmax gives back the probabilities");

	/* ascending cumulative: 0.1, 0.3, 0.6, 1.0; removed when <= 1 - top_p */
	gm_candidates_set(&c, l, 4);
	gm_candidates_top_p(&c, 0.75);
	ok(!strcmp(ids_of(&c), "3,2,1"), "top-p 0.75 removes 0.1 (cum 0.1 <= 0.25) (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_top_p(&c, 0.55);
	ok(!strcmp(ids_of(&c), "3,2"), "top-p 0.55 removes 0.1 and 0.2 (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_top_p(&c, 0.35);
	ok(!strcmp(ids_of(&c), "3"), "top-p 0.35 keeps the top only (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_top_p(&c, 0.01);
	ok(!strcmp(ids_of(&c), "3"), "top-p tiny: the most likely token always stays (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_top_p(&c, 1.0);
	ok(c.n == 4, "top-p 1 is off");

	/* min-p: removed when p < min_p * 0.4 */
	gm_candidates_set(&c, l, 4);
	gm_candidates_min_p(&c, 0.45);
	ok(!strcmp(ids_of(&c), "1,2,3"), "min-p 0.45 (threshold 0.18) removes 0.1 (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_min_p(&c, 0.6);
	ok(!strcmp(ids_of(&c), "2,3"), "min-p 0.6 (threshold 0.24) keeps 0.3 and 0.4 (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_min_p(&c, 1.0);
	ok(!strcmp(ids_of(&c), "3"), "min-p 1 keeps the top (got %s)", ids_of(&c));
	gm_candidates_set(&c, l, 4);
	gm_candidates_min_p(&c, 0.0);
	ok(c.n == 4, "min-p 0 is off");

	gm_candidates_set(&c, l, 4);
	ok(gm_candidates_pick(&c, 0.05) == 0 && gm_candidates_pick(&c, 0.15) == 1 &&
	   gm_candidates_pick(&c, 0.35) == 2 && gm_candidates_pick(&c, 0.65) == 3 &&
	   gm_candidates_pick(&c, 0.9999) == 3, "pick walks the cumulative distribution");
	c.n = 0;
	ok(gm_candidates_pick(&c, 0.5) == -1, "pick from nothing: -1");
	gm_candidates_release(&c);
}

static int cmp_id(const void *a, const void *b)
{
	const gm_token_logit *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

/* top-p by selection on a large vocabulary keeps what sorting everything keeps. */
static void test_top_p_large(void)
{
	static const double ps[] = { 0.05, 0.3, 0.5, 0.9, 0.95, 0.999 };
	static const float scales[] = { 0.5f, 3.0f, 12.0f };
	size_t n = 20000, i, j, k;
	float *l = malloc(n * sizeof(*l));
	gm_candidates c = GM_CANDIDATES_INIT, ref = GM_CANDIDATES_INIT;
	gm_rng rng;

	gm_rng_seed(&rng, 3);
	for (k = 0; k < N(scales); k++) {
		gm_rng_normal(&rng, l, n, 0.0f, scales[k]);
		for (j = 0; j < N(ps); j++) {
			double z = 0, above = 0;
			size_t keep;
			int same;

			/* the reference: sort all, keep while the mass above is < top_p */
			gm_candidates_set(&ref, l, n);
			gm_candidates_sort(&ref);
			for (i = 0; i < ref.n; i++)
				z += exp((double)ref.items[i].logit - ref.items[0].logit);
			for (keep = 0; keep < ref.n; keep++) {
				if (keep && above >= ps[j] * z)
					break;
				above += exp((double)ref.items[keep].logit - ref.items[0].logit);
			}
			ref.n = keep;
			gm_candidates_set(&c, l, n);
			gm_candidates_top_p(&c, ps[j]);
			same = c.n == ref.n;
			if (same) {
				qsort(c.items, c.n, sizeof(*c.items), cmp_id);
				qsort(ref.items, ref.n, sizeof(*ref.items), cmp_id);
				same = !memcmp(c.items, ref.items, c.n * sizeof(*c.items));
			}
			ok(same, "top-p %g on 20000 logits of scale %g keeps the %zu tokens sorting keeps (got %zu)",
			   ps[j], scales[k], ref.n, c.n);
		}
	}
	gm_candidates_release(&c);
	gm_candidates_release(&ref);
	free(l);
}

/* Counts of 20000 draws from the full chain on logits 1..5. */
static void draw(const gm_sampler_params *p, int32_t *first, int counts[5])
{
	const float base[] = { 1, 2, 3, 4, 5 };
	gm_sampler *s;
	gm_error err = GM_ERROR_INIT;
	int i;

	memset(counts, 0, 5 * sizeof(int));
	if (gm_sampler_new(p, 5, &s, &err)) {
		ok(0, "sampler: %s", err.msg);
		return;
	}
	for (i = 0; i < 20000; i++) {
		float l[5];
		int32_t id;

		memcpy(l, base, sizeof(l));
		id = gm_sampler_sample(s, l);
		if (i < 32)
			first[i] = id;
		if (id >= 0 && id < 5)
			counts[id]++;
	}
	gm_sampler_free(s);
}

static void test_chain(void)
{
	gm_sampler_params p;
	int32_t a[32], b[32], c[32];
	int ca[5], cb[5], cc[5];
	double e3 = exp(2.0), e4 = exp(2.5);
	gm_sampler *s;
	gm_error err = GM_ERROR_INIT;
	float l[5] = { 3, 2.9f, 1, 0, -1 };
	const int32_t seen = 0;

	/*
	 * temperature 2: 0.5 1 1.5 2 2.5; top-k 3: ids 2 3 4 with
	 * probabilities 0.186 0.307 0.507; top-p 0.7 removes id 2
	 * (0.186 <= 0.3): id 4 comes with 0.507 / 0.814 = 0.6225.
	 */
	gm_sampler_params_init(&p);
	p.temperature = 2;
	p.top_k = 3;
	p.top_p = 0.7;
	p.seed = 7;
	draw(&p, a, ca);
	draw(&p, b, cb);
	ok(!memcmp(a, b, sizeof(a)) && !memcmp(ca, cb, sizeof(ca)), "same seed, same draws");
	ok(ca[0] == 0 && ca[1] == 0 && ca[2] == 0, "only ids 3 and 4 are ever drawn (%d %d %d)", ca[0], ca[1], ca[2]);
	ok(fabs(ca[4] / 20000.0 - e4 / (e3 + e4)) < 0.015, "id 4 is drawn with probability 0.62 (%.4f)",
	   ca[4] / 20000.0);
	p.seed = 8;
	draw(&p, c, cc);
	ok(memcmp(a, c, sizeof(a)) != 0, "another seed, other draws");

	/* min-p 0.5 after temperature 1: p_i / p_max = e^(l_i - 5) >= 0.5 only for id 4 */
	gm_sampler_params_init(&p);
	p.temperature = 1;
	p.min_p = 0.5;
	draw(&p, a, ca);
	ok(ca[4] == 20000, "min-p 0.5 leaves only the top token");

	/* temperature 0: greedy, after the repetition penalty */
	gm_sampler_params_init(&p);
	p.repetition_penalty = 1.2;
	if (!gm_sampler_new(&p, 5, &s, &err)) {
		float l2[5];

		memcpy(l2, l, sizeof(l2));
		ok(gm_sampler_sample(s, l2) == 0, "greedy: the argmax");
		gm_sampler_accept(s, &seen, 1);
		memcpy(l2, l, sizeof(l2));
		ok(gm_sampler_sample(s, l2) == 1, "greedy with a penalty: 3 / 1.2 = 2.5 < 2.9");
		ok(l2[0] == 2.5f, "the penalty was applied in place");
		gm_sampler_reset(s);
		memcpy(l2, l, sizeof(l2));
		ok(gm_sampler_sample(s, l2) == 0, "reset forgets the seen tokens");
		gm_sampler_free(s);
	} else {
		ok(0, "sampler: %s", err.msg);
	}
	p.top_p = 3;
	ok_error(gm_sampler_new(&p, 5, &s, &err), &err, GM_EINVAL, "top-p", "gm_sampler_new checks the parameters");
}

/* Feeds bytes one piece at a time (split at the given sizes, the rest last). */
static const char *utf8(const char *bytes, size_t len, const size_t *cuts, size_t n_cuts, int *emitted_early)
{
	static gm_buf out = GM_BUF_INIT;
	gm_utf8_stream s;
	size_t at = 0, i;

	gm_utf8_stream_init(&s);
	gm_buf_reset(&out);
	*emitted_early = 0;
	for (i = 0; i < n_cuts; i++) {
		gm_utf8_stream_feed(&s, bytes + at, cuts[i], &out);
		at += cuts[i];
	}
	gm_utf8_stream_feed(&s, bytes + at, len - at, &out);
	*emitted_early = (int)out.len;
	gm_utf8_stream_finish(&s, &out);
	return out.buf;
}

#define FFFD "\xef\xbf\xbd"

static void test_utf8(void)
{
	static const size_t one[] = { 1 }, bytes3[] = { 1, 1, 1 }, two[] = { 2 };
	static const struct {
		const char *in, *want;
	} cases[] = {
		/* expectations as Python's bytes.decode("utf-8", "replace") */
		{ "plain", "plain" },
		{ "\x80", FFFD },
		{ "a\xc3(", "a" FFFD "(" },
		{ "\xe0\x80", FFFD FFFD },
		{ "\xf0\x9f\x98" "A", FFFD "A" },
		{ "\xed\xa0\x80", FFFD FFFD FFFD },
		{ "\xc0\xaf", FFFD FFFD },
		{ "\xf5\xf4\x90", FFFD FFFD FFFD },
		{ "\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf" },
		{ "\xe2\x82", FFFD },
		{ "\xef\xbb\xbfx", "\xef\xbb\xbfx" },
	};
	gm_utf8_stream s;
	gm_buf out = GM_BUF_INIT;
	int early;
	size_t i;

	ok(!strcmp(utf8("\xc3\xa9", 2, one, 1, &early), "\xc3\xa9") && early == 2,
	   "a 2-byte character split in two comes out whole");
	gm_utf8_stream_init(&s);
	gm_utf8_stream_feed(&s, "\xf0\x9f", 2, &out);
	gm_utf8_stream_feed(&s, "\x98", 1, &out);
	ok(out.len == 0, "nothing comes out of an incomplete character");
	gm_utf8_stream_feed(&s, "\x80!", 2, &out);
	ok(!strcmp(out.buf, "\xf0\x9f\x98\x80!"), "an emoji fed in three pieces, then what follows");
	gm_buf_release(&out);
	ok(!strcmp(utf8("\xe4\xb8\xad\xe6\x96\x87", 6, bytes3, 3, &early), "\xe4\xb8\xad\xe6\x96\x87") && early == 6,
	   "two CJK characters split everywhere");
	ok(!strcmp(utf8("ab\xc3", 3, two, 1, &early), "ab" FFFD) && early == 2,
	   "an incomplete character at the end becomes U+FFFD on finish");
	for (i = 0; i < N(cases); i++) {
		const char *got = utf8(cases[i].in, strlen(cases[i].in), NULL, 0, &early);

		ok(!strcmp(got, cases[i].want), "utf8 case %zu decodes as Python does", i);
	}
	/* the same cases fed byte by byte */
	for (i = 0; i < N(cases); i++) {
		gm_buf o = GM_BUF_INIT;
		size_t j, n = strlen(cases[i].in);

		gm_utf8_stream_init(&s);
		for (j = 0; j < n; j++)
			gm_utf8_stream_feed(&s, cases[i].in + j, 1, &o);
		gm_utf8_stream_finish(&s, &o);
		ok(!strcmp(o.buf, cases[i].want), "utf8 case %zu byte by byte", i);
		gm_buf_release(&o);
	}
}

/* Feeds pieces; returns what was shown, with "|" where a feed returned 1. */
static const char *stop_run(const char *const *stops, size_t n_stops, const char *const *pieces, size_t n,
			    int flush)
{
	static gm_buf res = GM_BUF_INIT;
	gm_stop_matcher m;
	size_t i;

	gm_buf_reset(&res);
	gm_stop_matcher_init(&m, stops, n_stops);
	for (i = 0; i < n; i++) {
		gm_buf out = GM_BUF_INIT;
		int hit = gm_stop_matcher_feed(&m, pieces[i], strlen(pieces[i]), &out);

		gm_buf_add(&res, out.buf, out.len);
		gm_buf_adds(&res, hit ? "|" : "/");
		gm_buf_release(&out);
	}
	if (flush) {
		gm_buf out = GM_BUF_INIT;

		gm_stop_matcher_flush(&m, &out);
		gm_buf_add(&res, out.buf, out.len);
		gm_buf_release(&out);
	}
	gm_stop_matcher_release(&m);
	return res.buf;
}

/* got with newlines escaped, for test names. */
static const char *esc(const char *got)
{
	static char s[256];
	size_t n = 0;

	for (; *got && n < sizeof(s) - 3; got++) {
		if (*got == '\n') {
			s[n++] = '\\';
			s[n++] = 'n';
		} else {
			s[n++] = *got;
		}
	}
	s[n] = '\0';
	return s;
}

static void test_stop(void)
{
	static const char *const stops[] = { "###", "\n\nUser:", "" };
	static const char *const p1[] = { "Hello #", "#", "# world", "more" };
	static const char *const p2[] = { "a#", "b" };
	static const char *const p3[] = { "x\n\nUs" };
	static const char *const p4[] = { "x\n", "\nUse", "r: hi" };
	static const char *const p5[] = { "no stop here" };
	static const char *const p6[] = { "one ### two \n\nUser:" };
	static const char *const p7[] = { "caf\xc3\xa9", "\xc3\xa9!" };
	static const char *const accents[] = { "\xc3\xa9\xc3\xa9!" };
	const char *got;

	got = stop_run(stops, N(stops), p1, N(p1), 1);
	ok(!strcmp(got, "Hello //||"), "a stop string over three pieces: text before it, nothing after (%s)", esc(got));
	got = stop_run(stops, N(stops), p2, N(p2), 1);
	ok(!strcmp(got, "a/#b/"), "a held '#' is released when it turns out not to start a stop string (%s)", esc(got));
	got = stop_run(stops, N(stops), p3, N(p3), 1);
	ok(!strcmp(got, "x/\n\nUs"), "a held prefix is released by flush (%s)", esc(got));
	got = stop_run(stops, N(stops), p4, N(p4), 1);
	ok(!strcmp(got, "x//|"), "a multi-line stop string across pieces (%s)", esc(got));
	got = stop_run(stops, N(stops), p5, N(p5), 0);
	ok(!strcmp(got, "no stop here/"), "text without a stop string passes at once (%s)", esc(got));
	got = stop_run(stops, N(stops), p6, N(p6), 1);
	ok(!strcmp(got, "one |"), "the earliest stop string wins (%s)", esc(got));
	got = stop_run(accents, N(accents), p7, N(p7), 1);
	ok(!strcmp(got, "caf/|"), "a stop string of multi-byte characters; the held character is not split (%s)",
	   got);
	got = stop_run(NULL, 0, p6, N(p6), 1);
	ok(!strcmp(got, "one ### two \n\nUser:/"), "no stop strings: everything passes (%s)", esc(got));
}

int main(void)
{
	test_params();
	test_penalty_and_argmax();
	test_temperature_top_k();
	test_top_p_min_p();
	test_top_p_large();
	test_chain();
	test_utf8();
	test_stop();
	return tap_done();
}
