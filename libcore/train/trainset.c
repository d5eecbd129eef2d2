/*
 * trainset.c - JSONL training data to token sequences and loss masks (see
 * trainset.h).
 */
#include "train/trainset.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "engine/modelfiles.h"
#include "text/chat.h"
#include "train/traindata.h"

#define ASSISTANT_OPEN "<|im_start|>assistant\n"
#define TURN_CLOSE "<|im_end|>"

/* A sequence being built. */
struct seq {
	int32_t *ids;
	uint8_t *mask;
	int64_t n, cap;
};

static void seq_add(struct seq *s, const int32_t *ids, size_t n, uint8_t m)
{
	size_t i;

	if (s->n + (int64_t)n > s->cap) {
		s->cap = (s->n + (int64_t)n) * 2 + 16;
		s->ids = gm_xrealloc(s->ids, (size_t)s->cap * sizeof(*s->ids));
		s->mask = gm_xrealloc(s->mask, (size_t)s->cap);
	}
	for (i = 0; i < n; i++) {
		s->ids[s->n] = ids[i];
		s->mask[s->n++] = m;
	}
}

static int seq_add_text(struct seq *s, const gm_tokenizer *tok, const char *text, size_t len, uint8_t m,
			gm_error *err)
{
	int32_t *ids = NULL;
	size_t n = 0;
	int ret;

	if (!len)
		return 0;
	if ((ret = gm_tokenizer_encode(tok, text, len, &ids, &n, err)))
		return ret;
	seq_add(s, ids, n, m);
	free(ids);
	return 0;
}

struct loader {
	const gm_model *model;
	const gm_tokenizer *tok;
	gm_chat_template *chat;   /* loaded on the first "messages" line */
	int64_t max_len;
};

static int messages_seq(struct loader *ld, const gm_td_example *ex, struct seq *s, gm_error *err)
{
	json_object *arr = json_object_new_array();
	gm_buf text = GM_BUF_INIT;
	const char *p, *end;
	size_t i, n_assistant = 0, n_spans = 0;
	int ret;

	if (!ld->chat && (ret = gm_model_chat_template_load(ld->model->dir, &ld->chat, err))) {
		json_object_put(arr);
		return gm_error_prefix(err, "\"messages\" need the model's chat template");
	}
	for (i = 0; i < ex->n_messages; i++) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "role", json_object_new_string(gm_td_role_name(ex->messages[i].role)));
		json_object_object_add(o, "content", json_object_new_string_len(ex->messages[i].content,
										(int)ex->messages[i].content_len));
		json_object_array_add(arr, o);
		n_assistant += ex->messages[i].role == GM_TD_ROLE_ASSISTANT;
	}
	ret = gm_chat_render(ld->chat, arr, 0, GM_CHAT_THINKING_UNSET, &text, err);
	json_object_put(arr);
	if (ret) {
		gm_buf_release(&text);
		return ret;
	}
	/* predicted: from after each ASSISTANT_OPEN through the TURN_CLOSE that ends it */
	p = text.buf;
	end = text.buf + text.len;
	while (!ret && p < end) {
		const char *a = strstr(p, ASSISTANT_OPEN), *c;

		if (!a) {
			ret = seq_add_text(s, ld->tok, p, (size_t)(end - p), 0, err);
			break;
		}
		a += strlen(ASSISTANT_OPEN);
		c = strstr(a, TURN_CLOSE);
		c = c ? c + strlen(TURN_CLOSE) : end;
		ret = seq_add_text(s, ld->tok, p, (size_t)(a - p), 0, err);
		if (!ret)
			ret = seq_add_text(s, ld->tok, a, (size_t)(c - a), 1, err);
		n_spans++;
		p = c;
	}
	gm_buf_release(&text);
	if (!ret && n_spans != n_assistant)
		ret = gm_error_set(err, GM_EFORMAT, "the chat template rendered %zu assistant turn%s for %zu assistant "
				   "message%s (expected each as \"<|im_start|>assistant\\n...<|im_end|>\")", n_spans,
				   n_spans == 1 ? "" : "s", n_assistant, n_assistant == 1 ? "" : "s");
	return ret;
}

static int example_seq(struct loader *ld, const gm_td_example *ex, struct seq *s, gm_error *err)
{
	const gm_model_config *c = &ld->model->config;
	size_t i;
	int ret = 0;

	switch (ex->kind) {
	case GM_TD_TEXT:
		return seq_add_text(s, ld->tok, ex->text, ex->text_len, 1, err);
	case GM_TD_PROMPT_COMPLETION:
		ret = seq_add_text(s, ld->tok, ex->prompt, ex->prompt_len, 0, err);
		if (!ret)
			ret = seq_add_text(s, ld->tok, ex->completion, ex->completion_len, 1, err);
		if (!ret && c->n_eos > 0) {
			int32_t eos = (int32_t)c->eos_token_ids[0];

			seq_add(s, &eos, 1, 1);
		}
		return ret;
	case GM_TD_MESSAGES:
		return messages_seq(ld, ex, s, err);
	case GM_TD_TOKENS:
		for (i = 0; i < ex->n_tokens; i++) {
			uint8_t m = ex->loss_mask ? ex->loss_mask[i] : 1;

			if (ex->input_ids[i] >= c->vocab_size)
				return gm_error_set(err, GM_EFORMAT, "input_ids[%zu] = %d is outside the model's "
						    "vocabulary (%lld tokens)", i, ex->input_ids[i],
						    (long long)c->vocab_size);
			seq_add(s, &ex->input_ids[i], 1, m);
		}
		return 0;
	default:
		return gm_error_set(err, GM_EFORMAT, "unknown example kind");
	}
}

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

void gm_trainset_free(gm_trainset *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->n; i++) {
		free(s->ex[i].ids);
		free(s->ex[i].mask);
	}
	free(s->ex);
	free(s->name);
	free(s);
}

int gm_trainset_load(const char *path, const gm_model *model, const gm_tokenizer *tok, int64_t max_len,
		     gm_trainset **out, gm_error *err)
{
	struct loader ld = { model, tok, NULL, max_len };
	gm_td_reader *r = NULL;
	gm_trainset *s;
	size_t cap = 0;
	int ret;

	if (max_len < 2)
		return gm_error_set(err, GM_EINVAL, "--max-len must be at least 2");
	if ((ret = gm_td_open(path, 0, &r, err)))
		return ret;
	s = gm_xcalloc(1, sizeof(*s));
	s->name = gm_xstrdup(gm_td_name(r));
	s->hash = 0xcbf29ce484222325ULL;
	for (;;) {
		gm_td_example ex;
		struct seq q = { NULL, NULL, 0, 0 };
		gm_trainset_example *e;
		int64_t j, targets = 0;

		ret = gm_td_next(r, &ex, err);
		if (ret <= 0)
			break;
		ret = example_seq(&ld, &ex, &q, err);
		if (!ret && q.n > max_len) {
			q.n = max_len;
			s->truncated++;
		}
		for (j = 1; !ret && j < q.n; j++)
			targets += q.mask[j] != 0;
		if (!ret && !targets)
			ret = gm_error_set(err, GM_EFORMAT, "nothing to predict%s (%lld token%s)",
					   q.n == max_len ? " within --max-len" : "", (long long)q.n, q.n == 1 ? "" : "s");
		if (ret) {
			free(q.ids);
			free(q.mask);
			gm_error_prefix(err, "%s:%lu", s->name, ex.line);
			break;
		}
		if (s->n == cap) {
			cap = cap ? 2 * cap : 64;
			s->ex = gm_xrealloc(s->ex, cap * sizeof(*s->ex));
		}
		e = &s->ex[s->n++];
		e->ids = q.ids;
		e->mask = q.mask;
		e->n = q.n;
		e->line = ex.line;
		s->n_tokens += q.n;
		s->n_targets += targets;
		s->hash = fnv(s->hash, &e->n, sizeof(e->n));
		s->hash = fnv(s->hash, e->ids, (size_t)e->n * sizeof(*e->ids));
		s->hash = fnv(s->hash, e->mask, (size_t)e->n);
	}
	gm_td_close(r);
	gm_chat_template_free(ld.chat);
	if (!ret && !s->n)
		ret = gm_error_set(err, GM_EFORMAT, "%s: no examples", s->name);
	if (ret) {
		gm_trainset_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

/* ------------------------------------------------------------ one example at a time */

struct gm_trainset_encoder {
	struct loader ld;
};

int gm_trainset_encoder_new(const gm_model *model, const gm_tokenizer *tok, int64_t max_len,
			    gm_trainset_encoder **out, gm_error *err)
{
	gm_trainset_encoder *enc;

	*out = NULL;
	if (max_len < 2)
		return gm_error_set(err, GM_EINVAL, "the longest sequence must be at least 2 tokens");
	enc = gm_xcalloc(1, sizeof(*enc));
	enc->ld.model = model;
	enc->ld.tok = tok;
	enc->ld.max_len = max_len;
	*out = enc;
	return 0;
}

void gm_trainset_encoder_free(gm_trainset_encoder *enc)
{
	if (!enc)
		return;
	gm_chat_template_free(enc->ld.chat);
	free(enc);
}

int gm_trainset_encode(gm_trainset_encoder *enc, const gm_td_example *ex, gm_trainset_example *e, int *truncated,
		       gm_error *err)
{
	struct seq q = { NULL, NULL, 0, 0 };
	int64_t j, targets = 0;
	int ret, cut = 0;

	memset(e, 0, sizeof(*e));
	ret = example_seq(&enc->ld, ex, &q, err);
	if (!ret && q.n > enc->ld.max_len) {
		q.n = enc->ld.max_len;
		cut = 1;
	}
	for (j = 1; !ret && j < q.n; j++)
		targets += q.mask[j] != 0;
	if (!ret && !targets)
		ret = gm_error_set(err, GM_EFORMAT, "nothing to predict%s (%lld token%s)",
				   cut ? " within the longest sequence" : "", (long long)q.n, q.n == 1 ? "" : "s");
	if (ret) {
		free(q.ids);
		free(q.mask);
		return ret;
	}
	e->ids = q.ids;
	e->mask = q.mask;
	e->n = q.n;
	e->line = ex->line;
	if (truncated)
		*truncated = cut;
	return 0;
}
