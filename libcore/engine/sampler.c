/* sampler.c - the sampler chain (see sampler.h). */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

struct gm_sampler {
	gm_sampler_params p;
	size_t n_vocab;
	gm_rng rng;
	uint8_t *seen;      /* [n_vocab]: 1 when the token is in the sequence */
	int32_t *seen_ids;  /* the distinct seen ids, in order of arrival */
	size_t n_seen;
	gm_candidates cand;
};

static void penalize(float *logits, size_t n_vocab, const int32_t *ids, size_t n, float penalty,
		     uint8_t *done);

void gm_sampler_params_init(gm_sampler_params *p)
{
	memset(p, 0, sizeof(*p));
	p->temperature = 0.0;
	p->top_k = 0;
	p->top_p = 1.0;
	p->min_p = 0.0;
	p->repetition_penalty = 1.0;
}

void gm_sampler_params_from_generation(gm_sampler_params *p, const gm_generation_config *gen)
{
	p->temperature = gen->do_sample ? gen->temperature : 0.0;
	p->top_k = gen->top_k;
	p->top_p = gen->top_p;
	p->min_p = gen->min_p;
	p->repetition_penalty = gen->repetition_penalty;
}

int gm_sampler_params_check(const gm_sampler_params *p, gm_error *err)
{
	if (!(p->temperature >= 0) || !isfinite(p->temperature))
		return gm_error_set(err, GM_EINVAL, "temperature must be a number >= 0, not %g", p->temperature);
	if (p->top_k < 0)
		return gm_error_set(err, GM_EINVAL, "top-k must be >= 0, not %lld", (long long)p->top_k);
	if (!(p->top_p > 0 && p->top_p <= 1))
		return gm_error_set(err, GM_EINVAL, "top-p must be > 0 and <= 1, not %g", p->top_p);
	if (!(p->min_p >= 0 && p->min_p <= 1))
		return gm_error_set(err, GM_EINVAL, "min-p must be between 0 and 1, not %g", p->min_p);
	if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
		return gm_error_set(err, GM_EINVAL, "repetition penalty must be a number > 0, not %g",
				    p->repetition_penalty);
	return 0;
}

int gm_sampler_new(const gm_sampler_params *p, size_t n_vocab, gm_sampler **out, gm_error *err)
{
	gm_sampler *s;
	int ret;

	*out = NULL;
	if ((ret = gm_sampler_params_check(p, err)))
		return ret;
	if (!n_vocab || n_vocab > INT32_MAX)
		return gm_error_set(err, GM_EINVAL, "sampler: a vocabulary of %zu tokens", n_vocab);
	s = gm_xcalloc(1, sizeof(*s));
	s->p = *p;
	s->n_vocab = n_vocab;
	gm_rng_seed(&s->rng, p->seed);
	s->seen = gm_xcalloc(n_vocab, 1);
	s->seen_ids = gm_xmalloc(n_vocab * sizeof(*s->seen_ids));
	*out = s;
	return 0;
}

void gm_sampler_free(gm_sampler *s)
{
	if (!s)
		return;
	free(s->seen);
	free(s->seen_ids);
	gm_candidates_release(&s->cand);
	free(s);
}

const gm_sampler_params *gm_sampler_params_of(const gm_sampler *s)
{
	return &s->p;
}

void gm_sampler_reset(gm_sampler *s)
{
	size_t i;

	for (i = 0; i < s->n_seen; i++)
		s->seen[s->seen_ids[i]] = 0;
	s->n_seen = 0;
}

void gm_sampler_accept(gm_sampler *s, const int32_t *ids, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int32_t id = ids[i];

		if (id < 0 || (size_t)id >= s->n_vocab || s->seen[id])
			continue;
		s->seen[id] = 1;
		s->seen_ids[s->n_seen++] = id;
	}
}

int32_t gm_sampler_sample(gm_sampler *s, float *logits)
{
	const gm_sampler_params *p = &s->p;
	gm_candidates *c = &s->cand;
	int32_t id;

	if (p->repetition_penalty != 1.0)
		penalize(logits, s->n_vocab, s->seen_ids, s->n_seen, (float)p->repetition_penalty, NULL);
	if (p->temperature == 0.0)
		return gm_sample_argmax(logits, s->n_vocab);
	gm_candidates_set(c, logits, s->n_vocab);
	if (p->temperature != 1.0)
		gm_candidates_temperature(c, (float)p->temperature);
	if (p->top_k > 0)
		gm_candidates_top_k(c, p->top_k);
	if (p->top_p < 1.0)
		gm_candidates_top_p(c, p->top_p);
	if (p->min_p > 0.0)
		gm_candidates_min_p(c, p->min_p);
	id = gm_candidates_pick(c, (double)gm_rng_uniform(&s->rng));
	/* Every logit was -inf or NaN: fall back on the argmax. */
	return id >= 0 ? id : gm_sample_argmax(logits, s->n_vocab);
}

int32_t gm_sampler_sample_checked(gm_sampler *s, float *logits, gm_sampler_check_fn check, void *ctx,
				  int max_tries)
{
	const gm_sampler_params *p = &s->p;
	gm_candidates *c = &s->cand;
	int t;

	if (p->repetition_penalty != 1.0)
		penalize(logits, s->n_vocab, s->seen_ids, s->n_seen, (float)p->repetition_penalty, NULL);
	if (p->temperature == 0.0) {
		/* the argmax, then the next one: logits in descending order (ties by id) */
		int32_t top[64];
		size_t n = gm_sample_top_n(logits, s->n_vocab, top, max_tries < 64 ? (size_t)max_tries : 64), i;

		for (i = 0; i < n; i++)
			if (check(ctx, top[i]))
				return top[i];
		return -1;
	}
	gm_candidates_set(c, logits, s->n_vocab);
	if (p->temperature != 1.0)
		gm_candidates_temperature(c, (float)p->temperature);
	if (p->top_k > 0)
		gm_candidates_top_k(c, p->top_k);
	if (p->top_p < 1.0)
		gm_candidates_top_p(c, p->top_p);
	if (p->min_p > 0.0)
		gm_candidates_min_p(c, p->min_p);
	for (t = 0; t < max_tries && c->n; t++) {
		int32_t id = gm_candidates_pick(c, (double)gm_rng_uniform(&s->rng));
		size_t i;

		if (id < 0)
			return -1;
		if (check(ctx, id))
			return id;
		/* drop it, keeping the order of the others */
		for (i = 0; i < c->n && c->items[i].id != id; i++)
			;
		if (i < c->n) {
			memmove(c->items + i, c->items + i + 1, (c->n - i - 1) * sizeof(*c->items));
			c->n--;
		}
	}
	return -1;
}

/* ---------------------------------------------------------------- stages */

/* Penalizes logits[ids[i]]; done (may be NULL when the ids are distinct)
 * marks what was penalized so that a duplicate is penalized once. */
static void penalize(float *logits, size_t n_vocab, const int32_t *ids, size_t n, float penalty,
		     uint8_t *done)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int32_t id = ids[i];
		float *l;

		if (id < 0 || (size_t)id >= n_vocab)
			continue;
		if (done) {
			if (done[id])
				continue;
			done[id] = 1;
		}
		l = &logits[id];
		*l = *l < 0 ? *l * penalty : *l / penalty;
	}
}

void gm_sample_repetition_penalty(float *logits, size_t n_vocab, const int32_t *ids, size_t n,
				  float penalty)
{
	uint8_t *done = n > 1 ? gm_xcalloc(n_vocab, 1) : NULL;

	penalize(logits, n_vocab, ids, n, penalty, done);
	free(done);
}

size_t gm_sample_top_n(const float *logits, size_t n, int32_t *ids, size_t k)
{
	size_t i, m = 0;

	for (i = 0; i < n && k; i++) {
		float l = logits[i];
		size_t j;

		if (l == -INFINITY || l != l || (m == k && !(l > logits[ids[m - 1]])))
			continue;
		/* insert after the ones >= l: earlier ids first on ties */
		j = m < k ? m++ : k - 1;
		while (j > 0 && logits[ids[j - 1]] < l) {
			ids[j] = ids[j - 1];
			j--;
		}
		ids[j] = (int32_t)i;
	}
	return m;
}

int32_t gm_sample_argmax(const float *logits, size_t n)
{
	size_t i, best = 0;

	if (!n)
		return -1;
	for (i = 1; i < n; i++)
		if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i])))
			best = i;
	return (int32_t)best;
}

void gm_candidates_set(gm_candidates *c, const float *logits, size_t n)
{
	size_t i;

	if (c->alloc < n) {
		free(c->items);
		c->items = gm_xmalloc(n * sizeof(*c->items));
		c->alloc = n;
	}
	c->n = 0;
	for (i = 0; i < n; i++) {
		if (isnan(logits[i]) || logits[i] == -INFINITY)
			continue;
		c->items[c->n].id = (int32_t)i;
		c->items[c->n].logit = logits[i];
		c->n++;
	}
	c->sorted = 0;
}

void gm_candidates_release(gm_candidates *c)
{
	free(c->items);
	c->items = NULL;
	c->n = c->alloc = 0;
	c->sorted = 0;
}

static int cmp_desc(const void *a, const void *b)
{
	const gm_token_logit *x = a, *y = b;

	if (x->logit != y->logit)
		return x->logit > y->logit ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

void gm_candidates_sort(gm_candidates *c)
{
	if (!c->sorted)
		qsort(c->items, c->n, sizeof(*c->items), cmp_desc);
	c->sorted = 1;
}

void gm_candidates_temperature(gm_candidates *c, float temperature)
{
	size_t i;

	for (i = 0; i < c->n; i++)
		c->items[i].logit = c->items[i].logit / temperature;
}

static float max_logit(const gm_candidates *c)
{
	float m = -INFINITY;
	size_t i;

	if (c->sorted && c->n)
		return c->items[0].logit;
	for (i = 0; i < c->n; i++)
		if (c->items[i].logit > m)
			m = c->items[i].logit;
	return m;
}

/* Sift-down in a min-heap of n floats. */
static void heap_down(float *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		float t;

		if (l < n && h[l] < h[m])
			m = l;
		if (r < n && h[r] < h[m])
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

void gm_candidates_top_k(gm_candidates *c, int64_t k)
{
	size_t i, j, kk;
	float *heap, kth;

	if (k <= 0 || (uint64_t)k >= c->n)
		return;
	kk = (size_t)k;
	if (c->sorted) {
		kth = c->items[kk - 1].logit;
	} else {
		/* The k largest logits in a min-heap: its root is the k-th. */
		heap = gm_xmalloc(kk * sizeof(*heap));
		for (i = 0; i < kk; i++)
			heap[i] = c->items[i].logit;
		for (i = kk / 2; i-- > 0;)
			heap_down(heap, kk, i);
		for (i = kk; i < c->n; i++) {
			if (c->items[i].logit > heap[0]) {
				heap[0] = c->items[i].logit;
				heap_down(heap, kk, 0);
			}
		}
		kth = heap[0];
		free(heap);
	}
	/* Remove what is below the k-th value; ties with it stay. */
	for (i = j = 0; i < c->n; i++)
		if (c->items[i].logit >= kth)
			c->items[j++] = c->items[i];
	c->n = j;
}

static void swap_items(gm_token_logit *a, size_t i, size_t j)
{
	gm_token_logit t = a[i];

	a[i] = a[j];
	a[j] = t;
}

/*
 * Partitions a[lo..hi) (hi - lo >= 3) around the median of three: returns
 * the pivot's index p, with what sorts before it (cmp_desc) in [lo, p).
 */
static size_t partition(gm_token_logit *a, size_t lo, size_t hi)
{
	size_t mid = lo + (hi - lo) / 2, last = hi - 1, i, p;

	if (cmp_desc(&a[mid], &a[lo]) < 0)
		swap_items(a, mid, lo);
	if (cmp_desc(&a[last], &a[lo]) < 0)
		swap_items(a, last, lo);
	if (cmp_desc(&a[last], &a[mid]) < 0)
		swap_items(a, last, mid);
	swap_items(a, mid, last);
	for (i = p = lo; i < last; i++)
		if (cmp_desc(&a[i], &a[last]) < 0)
			swap_items(a, i, p++);
	swap_items(a, p, last);
	return p;
}

void gm_candidates_top_p(gm_candidates *c, double top_p)
{
	gm_token_logit *a = c->items;
	double z = 0, target, above = 0;
	size_t i, lo = 0, hi = c->n, keep = 0;
	int sorted_now = 0;
	float m;

	if (top_p >= 1.0 || c->n <= 1)
		return;
	m = max_logit(c);
	for (i = 0; i < c->n; i++)
		z += exp((double)a[i].logit - m);
	/*
	 * transformers sorts ascending and removes the tokens whose cumulative
	 * probability (counted from the least likely, inclusive) is <= 1 -
	 * top_p.  Counted from the top, the k most likely tokens stay, k the
	 * first count whose mass reaches top_p.  That k is found by
	 * selection rather than sorting (a 151k vocabulary without top-k):
	 * [lo, hi) holds the boundary, the mass of [0, lo) is above < target.
	 */
	target = top_p * z;
	while (!c->sorted && hi - lo > 32) {
		size_t p = partition(a, lo, hi);
		double left = 0;

		for (i = lo; i < p; i++)
			left += exp((double)a[i].logit - m);
		if (above + left >= target) {
			hi = p;
			continue;
		}
		above += left + exp((double)a[p].logit - m);
		if (above >= target) {
			keep = p + 1;
			break;
		}
		lo = p + 1;
	}
	if (!keep) {
		if (!c->sorted && lo == 0)
			sorted_now = 1;
		if (!c->sorted)
			qsort(a + lo, hi - lo, sizeof(*a), cmp_desc);
		for (keep = hi, i = lo; i < hi; i++) {
			above += exp((double)a[i].logit - m);
			if (above >= target) {
				keep = i + 1;
				break;
			}
		}
	}
	c->sorted = c->sorted || sorted_now;
	c->n = keep;
}

void gm_candidates_min_p(gm_candidates *c, double min_p)
{
	float m;
	size_t i, j;

	if (min_p <= 0.0 || !c->n)
		return;
	m = max_logit(c);
	/* p_i < min_p * p_max  <=>  exp(l_i - l_max) < min_p; the top stays. */
	for (i = j = 0; i < c->n; i++)
		if (c->items[i].logit == m || exp((double)c->items[i].logit - m) >= min_p)
			c->items[j++] = c->items[i];
	c->n = j;
}

void gm_candidates_softmax(const gm_candidates *c, double *probs)
{
	double z = 0;
	float m = max_logit(c);
	size_t i;

	for (i = 0; i < c->n; i++) {
		probs[i] = exp((double)c->items[i].logit - m);
		z += probs[i];
	}
	for (i = 0; i < c->n; i++)
		probs[i] /= z;
}

int32_t gm_candidates_pick(const gm_candidates *c, double u)
{
	double z = 0, acc = 0, target;
	float m;
	size_t i;

	if (!c->n)
		return -1;
	m = max_logit(c);
	for (i = 0; i < c->n; i++)
		z += exp((double)c->items[i].logit - m);
	target = u * z;
	for (i = 0; i < c->n; i++) {
		acc += exp((double)c->items[i].logit - m);
		if (acc > target)
			return c->items[i].id;
	}
	return c->items[c->n - 1].id;
}
