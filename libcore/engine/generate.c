/* generate.c - the generation loop, streamed UTF-8 and stop strings (see generate.h). */
#include "engine/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- UTF-8 */

static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

void gm_utf8_stream_init(gm_utf8_stream *s)
{
	memset(s, 0, sizeof(*s));
}

/* Length of the character a lead byte starts; 0 for a byte that cannot lead. */
static int lead_length(unsigned char b)
{
	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf)
		return 2;
	if (b >= 0xe0 && b <= 0xef)
		return 3;
	if (b >= 0xf0 && b <= 0xf4)
		return 4;
	return 0;
}

/* Whether b may follow the bytes held (lead first). */
static int continues(const gm_utf8_stream *s, unsigned char b)
{
	unsigned char lo = 0x80, hi = 0xbf;

	if (s->n_pend == 1) {
		switch (s->pend[0]) {
		case 0xe0: lo = 0xa0; break;  /* no overlong forms */
		case 0xed: hi = 0x9f; break;  /* no surrogates */
		case 0xf0: lo = 0x90; break;  /* no overlong forms */
		case 0xf4: hi = 0x8f; break;  /* nothing past U+10FFFF */
		}
	}
	return b >= lo && b <= hi;
}

void gm_utf8_stream_feed(gm_utf8_stream *s, const void *data, size_t len, gm_buf *out)
{
	const unsigned char *p = data;
	size_t i = 0;

	while (i < len) {
		unsigned char b = p[i];

		if (!s->n_pend) {
			int n = lead_length(b);

			i++;
			if (n == 1) {
				gm_buf_addch(out, b);
			} else if (!n) {
				gm_buf_adds(out, replacement);
			} else {
				s->pend[0] = b;
				s->n_pend = 1;
				s->need = n;
			}
			continue;
		}
		if (!continues(s, b)) {
			/* The bytes held are a maximal ill-formed subpart: one
			 * U+FFFD, and b starts afresh. */
			gm_buf_adds(out, replacement);
			s->n_pend = 0;
			continue;
		}
		s->pend[s->n_pend++] = b;
		i++;
		if (s->n_pend == s->need) {
			gm_buf_add(out, s->pend, (size_t)s->n_pend);
			s->n_pend = 0;
		}
	}
}

void gm_utf8_stream_finish(gm_utf8_stream *s, gm_buf *out)
{
	if (s->n_pend)
		gm_buf_adds(out, replacement);
	s->n_pend = 0;
}

/* ---------------------------------------------------------------- stop strings */

void gm_stop_matcher_init(gm_stop_matcher *m, const char *const *stops, size_t n_stops)
{
	m->stops = stops;
	m->n_stops = n_stops;
	gm_buf_init(&m->pending);
	m->stopped = 0;
}

void gm_stop_matcher_release(gm_stop_matcher *m)
{
	gm_buf_release(&m->pending);
}

int gm_stop_matcher_feed(gm_stop_matcher *m, const char *text, size_t len, gm_buf *out)
{
	gm_buf *p = &m->pending;
	size_t i, first = SIZE_MAX, hold = 0;

	if (m->stopped)
		return 1;
	gm_buf_add(p, text, len);
	for (i = 0; i < m->n_stops; i++) {
		size_t sl = strlen(m->stops[i]);
		const char *at;

		if (!sl)
			continue;
		at = memmem(p->buf, p->len, m->stops[i], sl);
		if (at && (size_t)(at - p->buf) < first)
			first = (size_t)(at - p->buf);
	}
	if (first != SIZE_MAX) {
		gm_buf_add(out, p->buf, first);
		gm_buf_reset(p);
		m->stopped = 1;
		return 1;
	}
	/* Hold back the longest tail that a stop string starts with. */
	for (i = 0; i < m->n_stops; i++) {
		size_t sl = strlen(m->stops[i]), k;

		for (k = sl ? sl - 1 : 0; k > hold; k--)
			if (k <= p->len && !memcmp(p->buf + p->len - k, m->stops[i], k)) {
				hold = k;
				break;
			}
	}
	gm_buf_add(out, p->buf, p->len - hold);
	memmove(p->buf, p->buf + p->len - hold, hold);
	p->len = hold;
	p->buf[hold] = '\0';
	return 0;
}

void gm_stop_matcher_flush(gm_stop_matcher *m, gm_buf *out)
{
	if (!m->stopped)
		gm_buf_add(out, m->pending.buf, m->pending.len);
	gm_buf_reset(&m->pending);
}

/* ---------------------------------------------------------------- the loop */

const char *gm_stop_reason_name(enum gm_stop_reason r)
{
	switch (r) {
	case GM_STOP_NONE: return "none";
	case GM_STOP_EOS: return "end of sequence";
	case GM_STOP_STRING: return "stop string";
	case GM_STOP_LENGTH: return "max tokens";
	case GM_STOP_CONTEXT: return "context full";
	case GM_STOP_CALLBACK: return "stopped by the caller";
	}
	return "unknown";
}

void gm_generate_opts_init(gm_generate_opts *o, const gm_generation_config *gen)
{
	memset(o, 0, sizeof(*o));
	o->max_tokens = -1;
	o->skip_special = 1;
	if (gen) {
		o->n_eos = gen->n_eos;
		memcpy(o->eos_ids, gen->eos_token_ids, sizeof(o->eos_ids));
	}
}

/* ---------------------------------------------------------------- one sequence */

struct gm_gen_seq {
	const gm_tokenizer *tok;
	const gm_generate_opts *o;
	size_t n_vocab;
	int want_text;
	gm_utf8_stream u;
	gm_stop_matcher sm;
	gm_buf bytes, text, shown;
	int n_generated;
	enum gm_stop_reason stop;  /* GM_STOP_NONE while it goes on */
	/* constrained decoding (o->grammar) */
	gm_grammar_state *gst;
	const gm_grammar_vocab *vocab;
	gm_grammar_vocab *own_vocab;
	float *saved;              /* [n_vocab]: the logits before the sampler changed them */
	unsigned char *allowed;    /* [vocab size] */
};

static int is_eos(const gm_generate_opts *o, int32_t id)
{
	int i;

	for (i = 0; i < o->n_eos; i++)
		if (o->eos_ids[i] == id)
			return 1;
	return 0;
}

int gm_gen_seq_new(const gm_tokenizer *tok, size_t n_vocab, const gm_generate_opts *o, const int32_t *prompt,
		   size_t n_prompt, gm_gen_seq **out, gm_error *err)
{
	gm_gen_seq *gs;

	*out = NULL;
	if ((o->on_text || o->n_stop) && !tok)
		return gm_error_set(err, GM_EINVAL, "text output and stop strings need a tokenizer");
	if (o->grammar && !tok && !o->grammar_vocab)
		return gm_error_set(err, GM_EINVAL, "a grammar needs a tokenizer");
	gs = gm_xcalloc(1, sizeof(*gs));
	if (o->grammar) {
		int ret;

		gs->vocab = o->grammar_vocab;
		if (!gs->vocab) {
			if ((ret = gm_grammar_vocab_new(tok, n_vocab, &gs->own_vocab, err))) {
				free(gs);
				return ret;
			}
			gs->vocab = gs->own_vocab;
		}
		gm_grammar_state_new(o->grammar, &gs->gst);
		/* a special token the grammar spells must show in the text, or the text would not match */
		gm_grammar_state_set_special(gs->gst, !o->skip_special);
		gs->allowed = gm_xmalloc(gm_grammar_vocab_size(gs->vocab) + 1);
		gs->saved = gm_xmalloc(n_vocab * sizeof(*gs->saved));
	}
	gs->tok = tok;
	gs->o = o;
	gs->n_vocab = n_vocab;
	gs->want_text = o->on_text || o->n_stop;
	gm_utf8_stream_init(&gs->u);
	gm_stop_matcher_init(&gs->sm, o->stop, o->n_stop);
	gm_buf_init(&gs->bytes);
	gm_buf_init(&gs->text);
	gm_buf_init(&gs->shown);
	if (o->sampler) {
		gm_sampler_reset(o->sampler);
		gm_sampler_accept(o->sampler, prompt, n_prompt);
	}
	*out = gs;
	return 0;
}

void gm_gen_seq_free(gm_gen_seq *gs)
{
	if (!gs)
		return;
	gm_stop_matcher_release(&gs->sm);
	gm_buf_release(&gs->bytes);
	gm_buf_release(&gs->text);
	gm_buf_release(&gs->shown);
	gm_grammar_state_free(gs->gst);
	gm_grammar_vocab_free(gs->own_vocab);
	free(gs->saved);
	free(gs->allowed);
	free(gs);
}

int gm_gen_seq_n_generated(const gm_gen_seq *gs)
{
	return gs->n_generated;
}

/* Passes gs->shown to on_text; 1 when the callback asks to stop. */
static int show(gm_gen_seq *gs)
{
	const gm_generate_opts *o = gs->o;
	int stop = 0;

	if (gs->shown.len && o->on_text)
		stop = o->on_text(o->cb_ctx, gs->shown.buf, gs->shown.len) != 0;
	gm_buf_reset(&gs->shown);
	return stop;
}

/*
 * Streams the text of one token.  Returns 0, or the reason to stop
 * (a stop string, the callback), or a negative error.
 */
static int token_text(gm_gen_seq *gs, int32_t id, gm_error *err)
{
	int ret;

	if ((size_t)id >= gm_tokenizer_n_tokens(gs->tok) ||
	    (gs->o->skip_special && gm_tokenizer_is_special(gs->tok, id)))
		return 0;
	gm_buf_reset(&gs->bytes);
	gm_buf_reset(&gs->text);
	if ((ret = gm_tokenizer_token_bytes(gs->tok, id, &gs->bytes, err)))
		return ret;
	gm_utf8_stream_feed(&gs->u, gs->bytes.buf, gs->bytes.len, &gs->text);
	if (!gs->text.len)
		return 0;
	ret = gm_stop_matcher_feed(&gs->sm, gs->text.buf, gs->text.len, &gs->shown);
	if (show(gs))
		return GM_STOP_CALLBACK;
	return ret ? GM_STOP_STRING : 0;
}

/* The end of the text: what the decoder and the matcher still hold. */
static int finish_text(gm_gen_seq *gs)
{
	int found;

	gm_buf_reset(&gs->text);
	gm_utf8_stream_finish(&gs->u, &gs->text);
	found = gm_stop_matcher_feed(&gs->sm, gs->text.buf, gs->text.len, &gs->shown);
	gm_stop_matcher_flush(&gs->sm, &gs->shown);
	if (show(gs))
		return GM_STOP_CALLBACK;
	return found ? GM_STOP_STRING : 0;
}

enum gm_stop_reason gm_gen_seq_end(gm_gen_seq *gs, enum gm_stop_reason why)
{
	if (gs->stop)
		return gs->stop;
	gs->stop = why;
	/* A stop string or a callback already ended the text. */
	if (gs->want_text && why != GM_STOP_CALLBACK && why != GM_STOP_STRING) {
		int r = finish_text(gs);

		if (r)
			gs->stop = r;
	}
	return gs->stop;
}

/* Whether the grammar allows token id next. */
static int grammar_allows(gm_gen_seq *gs, int32_t id)
{
	if (is_eos(gs->o, id))
		return gm_grammar_state_can_end(gs->gst);
	return gm_grammar_state_allows(gs->gst, gs->vocab, id);
}

static int32_t choose(gm_gen_seq *gs, float *logits)
{
	const gm_generate_opts *o = gs->o;

	return o->sampler ? gm_sampler_sample(o->sampler, logits) : gm_sample_argmax(logits, gs->n_vocab);
}

static int check_token(void *ctx, int32_t id)
{
	return grammar_allows(ctx, id);
}

/* Tokens checked one by one before the whole vocabulary is masked. */
#define GRAMMAR_TRIES 16

/*
 * The next token under the grammar (see gm_generate_opts.grammar): the
 * first the sampler chooses that the grammar allows, trying its most
 * likely choices one by one; when none of GRAMMAR_TRIES is allowed, the one
 * chosen from the masked logits.  Returns 0, or GM_STOP_EOS when no token is
 * allowed and the grammar is complete (*id = -1), or GM_EINVAL when no
 * token is allowed and it is not.
 */
static int choose_constrained(gm_gen_seq *gs, float *logits, int32_t *id, gm_error *err)
{
	const gm_generate_opts *o = gs->o;
	size_t i, nv = gm_grammar_vocab_size(gs->vocab), n_allowed;
	int k;

	/* the logits as they came, for the masked choice: the tries change them */
	memcpy(gs->saved, logits, gs->n_vocab * sizeof(*logits));
	if (o->sampler) {
		*id = gm_sampler_sample_checked(o->sampler, logits, check_token, gs, GRAMMAR_TRIES);
	} else {
		/* greedy: the most likely tokens in order */
		int32_t top[GRAMMAR_TRIES];
		size_t n_top = gm_sample_top_n(logits, gs->n_vocab, top, GRAMMAR_TRIES);

		*id = -1;
		for (i = 0; i < n_top && *id < 0; i++)
			if (grammar_allows(gs, top[i]))
				*id = top[i];
	}
	if (*id >= 0)
		return 0;
	/* none of the likely ones: the full mask */
	n_allowed = gm_grammar_state_mask(gs->gst, gs->vocab, gs->allowed);
	memcpy(logits, gs->saved, gs->n_vocab * sizeof(*logits));
	for (i = 0; i < gs->n_vocab; i++)
		if (i >= nv || !gs->allowed[i])
			logits[i] = -INFINITY;
	/* EOS only where the grammar may end (not where a literal merely spells it) */
	for (k = 0; k < o->n_eos; k++)
		if (o->eos_ids[k] >= 0 && (size_t)o->eos_ids[k] < gs->n_vocab) {
			int32_t e = o->eos_ids[k];

			if ((size_t)e < nv && gs->allowed[e]) {
				gs->allowed[e] = 0;
				n_allowed--;
			}
			if (gm_grammar_state_can_end(gs->gst)) {
				logits[e] = gs->saved[e];
				n_allowed++;
			} else {
				logits[e] = -INFINITY;
			}
		}
	if (!n_allowed) {
		*id = -1;
		if (gm_grammar_state_can_end(gs->gst))
			return GM_STOP_EOS;
		return gm_error_set(err, GM_EINVAL, "grammar: no token of the vocabulary can continue the text");
	}
	*id = choose(gs, logits);
	return 0;
}

int gm_gen_seq_next(gm_gen_seq *gs, float *logits, int32_t *idp, gm_error *err)
{
	const gm_generate_opts *o = gs->o;
	int32_t id;
	int ret;

	*idp = -1;
	if (gs->stop)
		return gs->stop;
	if (o->on_logits && o->on_logits(o->cb_ctx, logits, gs->n_vocab))
		return gm_gen_seq_end(gs, GM_STOP_CALLBACK);
	if (gs->gst) {
		ret = choose_constrained(gs, logits, &id, err);
		if (ret < 0)
			return ret;
		if (ret)
			return gm_gen_seq_end(gs, ret);
		if (!is_eos(o, id))
			gm_grammar_state_accept_token(gs->gst, gs->vocab, id);
	} else {
		id = choose(gs, logits);
	}
	*idp = id;
	gs->n_generated++;
	if (o->sampler)
		gm_sampler_accept(o->sampler, &id, 1);
	if (o->on_token && o->on_token(o->cb_ctx, id))
		return gm_gen_seq_end(gs, GM_STOP_CALLBACK);
	if (is_eos(o, id))
		return gm_gen_seq_end(gs, GM_STOP_EOS);
	if (gs->want_text) {
		ret = token_text(gs, id, err);
		if (ret < 0)
			return ret;
		if (ret)
			return gm_gen_seq_end(gs, ret);
	}
	if (o->max_tokens > 0 && gs->n_generated >= o->max_tokens)
		return gm_gen_seq_end(gs, GM_STOP_LENGTH);
	return 0;
}

/* ---------------------------------------------------------------- the loop */

struct gm_generator {
	const gm_model *model;
	gm_forward *f;
	const gm_tokenizer *tok;
	size_t n_vocab;
	float *logits;          /* [n_vocab] */
	int32_t *cache_ids;     /* the tokens f's cache holds, in order */
	size_t n_cache, alloc_cache;
	size_t n_reuse;         /* the first of them read as a prompt: what a later prompt may reuse */
	uint64_t cache_epoch;   /* f's adapters when they were computed */
	int32_t *out;           /* the last generation's ids */
	size_t n_out, alloc_out;
};

int gm_generator_new(const gm_model *m, gm_forward *f, const gm_tokenizer *tok, gm_generator **out,
		     gm_error *err)
{
	gm_generator *g;

	*out = NULL;
	if (m->config.vocab_size <= 0 || m->config.vocab_size > INT32_MAX)
		return gm_error_set(err, GM_EINVAL, "%s: a vocabulary of %lld tokens", m->dir,
				    (long long)m->config.vocab_size);
	g = gm_xcalloc(1, sizeof(*g));
	g->model = m;
	g->f = f;
	g->tok = tok;
	g->n_vocab = (size_t)m->config.vocab_size;
	g->logits = gm_xmalloc(g->n_vocab * sizeof(*g->logits));
	gm_forward_truncate(f, 0);
	*out = g;
	return 0;
}

void gm_generator_free(gm_generator *g)
{
	if (!g)
		return;
	free(g->logits);
	free(g->cache_ids);
	free(g->out);
	free(g);
}

const int32_t *gm_generator_output(const gm_generator *g, size_t *n)
{
	*n = g->n_out;
	return g->out;
}

static void push_id(int32_t **v, size_t *n, size_t *alloc, int32_t id)
{
	if (*n == *alloc) {
		*alloc = *alloc ? 2 * *alloc : 256;
		*v = gm_xrealloc(*v, *alloc * sizeof(**v));
	}
	(*v)[(*n)++] = id;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/*
 * Evaluates ids[0..n) after what the cache holds, as role (a server reads
 * prompts and generated tokens with the same kernels: the same bits), or,
 * with all, every row's logits; on failure the cache is emptied.
 */
static int eval(gm_generator *g, const int32_t *ids, size_t n, float *logits, int all, enum gm_forward_role role,
		gm_error *err)
{
	size_t i;
	int ret = all ? gm_forward_eval(g->f, ids, (int)n, logits, 1, err)
		      : gm_forward_eval_as(g->f, ids, (int)n, logits, role, err);

	if (ret) {
		gm_forward_truncate(g->f, 0);
		g->n_cache = g->n_reuse = 0;
		return ret;
	}
	if (g->n_reuse == g->n_cache && role == GM_FWD_PROMPT)
		g->n_reuse += n;
	for (i = 0; i < n; i++)
		push_id(&g->cache_ids, &g->n_cache, &g->alloc_cache, ids[i]);
	g->cache_epoch = gm_forward_adapters_epoch(g->f);
	return 0;
}

static int check_prompt(gm_generator *g, const int32_t *prompt, size_t n_prompt, const gm_generate_opts *o,
			gm_error *err)
{
	int n_ctx = gm_forward_n_ctx(g->f);
	size_t i;

	if (!n_prompt)
		return gm_error_set(err, GM_EINVAL, "the prompt is empty: there is nothing to continue");
	if (n_prompt > (size_t)n_ctx)
		return gm_error_set(err, GM_EINVAL, "the prompt is %zu tokens, longer than the context (%d tokens)",
				    n_prompt, n_ctx);
	for (i = 0; i < n_prompt; i++)
		if (prompt[i] < 0 || (size_t)prompt[i] >= g->n_vocab)
			return gm_error_set(err, GM_EINVAL, "token id %lld is out of range (the vocabulary has "
					    "%zu tokens)", (long long)prompt[i], g->n_vocab);
	if ((o->on_text || o->n_stop) && !g->tok)
		return gm_error_set(err, GM_EINVAL, "text output and stop strings need a tokenizer");
	return 0;
}

int gm_generate(gm_generator *g, const int32_t *prompt, size_t n_prompt, const gm_generate_opts *o,
		gm_generate_stats *stats, gm_error *err)
{
	gm_generate_stats st;
	gm_gen_seq *gs = NULL;
	int n_ctx = gm_forward_n_ctx(g->f);
	size_t common = 0;
	double t0, t1;
	int ret;

	memset(&st, 0, sizeof(st));
	if (stats)
		*stats = st;
	g->n_out = 0;
	if ((ret = check_prompt(g, prompt, n_prompt, o, err)))
		return ret;

	/* Keep the cached tokens this prompt starts with, when they were
	 * computed with the adapters f has now and read as a prompt (a
	 * generated token's keys and values, computed by the decode kernels,
	 * differ in the last bits from the same token read in a prompt); at
	 * least one token is evaluated, for its logits. */
	if (!o->prompt_logits && gm_forward_pos(g->f) == (int)g->n_cache &&
	    gm_forward_adapters_epoch(g->f) == g->cache_epoch)
		while (common < g->n_reuse && common < n_prompt && g->cache_ids[common] == prompt[common])
			common++;
	if (common == n_prompt)
		common--;
	gm_forward_truncate(g->f, (int)common);
	g->n_cache = common;
	if (g->n_reuse > common)
		g->n_reuse = common;

	t0 = now_s();
	if (o->prompt_logits) {
		ret = eval(g, prompt, n_prompt, o->prompt_logits, 1, GM_FWD_ANY, err);
		if (!ret)
			memcpy(g->logits, o->prompt_logits + (n_prompt - 1) * g->n_vocab,
			       g->n_vocab * sizeof(*g->logits));
	} else {
		ret = eval(g, prompt + common, n_prompt - common, g->logits, 0, GM_FWD_PROMPT, err);
	}
	if (ret)
		return ret;
	t1 = now_s();
	st.n_prompt = (int)(n_prompt - common);
	st.n_cached = (int)common;
	st.prompt_s = t1 - t0;

	if (o->max_tokens == 0) {
		st.stop = GM_STOP_LENGTH;
		goto done;
	}
	if ((ret = gm_gen_seq_new(g->tok, g->n_vocab, o, prompt, n_prompt, &gs, err)))
		return ret;
	for (;;) {
		int32_t id;
		int r = gm_gen_seq_next(gs, g->logits, &id, err);

		if (id >= 0)
			push_id(&g->out, &g->n_out, &g->alloc_out, id);
		if (r < 0) {
			ret = r;
			break;
		}
		if (r > 0) {
			st.stop = r;
			break;
		}
		if (gm_forward_pos(g->f) >= n_ctx) {
			st.stop = gm_gen_seq_end(gs, GM_STOP_CONTEXT);
			break;
		}
		if ((ret = eval(g, &id, 1, g->logits, 0, GM_FWD_DECODE, err)))
			break;
		st.n_decode++;
	}
	st.n_generated = gm_gen_seq_n_generated(gs);
	gm_gen_seq_free(gs);
	st.decode_s = now_s() - t1;
done:
	if (stats)
		*stats = st;
	return ret < 0 ? ret : 0;
}
