/*
 * trainset.h - a JSONL training file (traindata.h) turned into token
 * sequences with loss masks, ready for train.h.
 *
 * Each form becomes (ids, mask), mask[j] = 1 when token j is predicted
 * (from the tokens before it; mask[0] never counts):
 *
 *   {"text"}                 the text's tokens, every one predicted;
 *   {"prompt", "completion"} prompt tokens, then completion tokens and the
 *                            model's end-of-sequence token (the first eos id
 *                            of its config), only these predicted; prompt and
 *                            completion are tokenized separately;
 *   {"messages"}             the conversation rendered by the model's chat
 *                            template (no generation prompt, enable_thinking
 *                            unset), predicted: every assistant turn from
 *                            after "<|im_start|>assistant\n" up to and with
 *                            its "<|im_end|>" (thinking blocks included, as
 *                            the template renders them); the text is
 *                            tokenized in pieces split at those bounds;
 *   {"input_ids", "loss_mask"} as given (no mask: every token predicted).
 *
 * Sequences longer than max_len tokens keep their first max_len (counted
 * in truncated).  The whole file is read before training: the first bad
 * line stops the load with "FILE:LINE: reason", including an id outside
 * the vocabulary and an example left with nothing to predict.
 */
#ifndef GM_TRAINSET_H
#define GM_TRAINSET_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "formats/model.h"
#include "text/tokenizer.h"

typedef struct gm_trainset_example {
	int32_t *ids;
	uint8_t *mask;
	int64_t n;
	unsigned long line;
} gm_trainset_example;

typedef struct gm_trainset {
	char *name;                /* the file as errors name it */
	gm_trainset_example *ex;
	size_t n;
	unsigned long truncated;   /* examples cut at max_len */
	int64_t n_tokens, n_targets;
	uint64_t hash;             /* FNV-1a of every (n, ids, mask): identifies the data for --resume */
} gm_trainset;

/*
 * Loads path ("-": standard input).  The tokenizer is the model's; the chat
 * template is loaded from model->dir when the first "messages" line comes.
 */
int gm_trainset_load(const char *path, const gm_model *model, const gm_tokenizer *tok, int64_t max_len,
		     gm_trainset **out, gm_error *err);
void gm_trainset_free(gm_trainset *s);

/*
 * One example at a time, with the rules above (online learning: examples
 * that arrive while a model serves).  gm_trainset_encode turns ex into
 * e->ids and e->mask (allocated; e->line = ex->line): cut to max_len
 * (*truncated set to 1, may be NULL), GM_EFORMAT "nothing to predict" when
 * no position is left in the loss, "outside the vocabulary" for token ids.
 * The encoder loads the chat template at its first "messages" example.
 */
typedef struct gm_trainset_encoder gm_trainset_encoder;
int gm_trainset_encoder_new(const gm_model *model, const gm_tokenizer *tok, int64_t max_len,
			    gm_trainset_encoder **out, gm_error *err);
void gm_trainset_encoder_free(gm_trainset_encoder *enc);
struct gm_td_example;
int gm_trainset_encode(gm_trainset_encoder *enc, const struct gm_td_example *ex, gm_trainset_example *e,
		       int *truncated, gm_error *err);

#endif
