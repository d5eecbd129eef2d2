/*
 * traindata.h - training data files (JSONL) for git train.
 *
 * One example per line, each a JSON object of exactly one of these forms:
 *
 *   {"text": STR}                                  plain text (non-empty)
 *   {"messages": [{"role": ROLE, "content": STR}, ...]}
 *       ROLE is system, user, assistant or tool; the list is non-empty and
 *       holds at least one assistant turn
 *   {"prompt": STR, "completion": STR}             completion non-empty
 *   {"input_ids": [INT >= 0, ...], "loss_mask": [0|1, ...]}
 *       token ids, non-empty; loss_mask optional, same length, not all 0
 *
 * Other keys are errors.  Blank lines are skipped; a UTF-8 byte order mark
 * before the first line is ignored; lines end in LF or CRLF.  Every error
 * reads "FILE:LINE: reason" ("<stdin>" for "-").
 */
#ifndef GM_TRAINDATA_H
#define GM_TRAINDATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define GM_TD_DEFAULT_MAX_LINE (64u << 20) /* bytes in one line */

enum gm_td_kind {
	GM_TD_TEXT,
	GM_TD_MESSAGES,
	GM_TD_PROMPT_COMPLETION,
	GM_TD_TOKENS,
	GM_TD_KIND_COUNT
};

/* "text", "messages", "prompt/completion", "token ids" */
const char *gm_td_kind_name(enum gm_td_kind k);
/* As a JSON key: "text", "messages", "prompt_completion", "token_ids" */
const char *gm_td_kind_key(enum gm_td_kind k);

enum gm_td_role {
	GM_TD_ROLE_SYSTEM,
	GM_TD_ROLE_USER,
	GM_TD_ROLE_ASSISTANT,
	GM_TD_ROLE_TOOL
};
const char *gm_td_role_name(enum gm_td_role r);

struct gm_td_message {
	enum gm_td_role role;
	const char *content;
	size_t content_len;
};

/*
 * One example.  Pointers are borrowed from the reader and stay valid until
 * the next gm_td_next or gm_td_close.  Only the fields of ex->kind are set.
 */
typedef struct gm_td_example {
	enum gm_td_kind kind;
	unsigned long line;  /* 1-based line number */
	const char *text;    /* GM_TD_TEXT */
	size_t text_len;
	const char *prompt;  /* GM_TD_PROMPT_COMPLETION */
	size_t prompt_len;
	const char *completion;
	size_t completion_len;
	const struct gm_td_message *messages; /* GM_TD_MESSAGES */
	size_t n_messages;
	const int32_t *input_ids;             /* GM_TD_TOKENS */
	const uint8_t *loss_mask;             /* NULL when the line has none */
	size_t n_tokens;
} gm_td_example;

typedef struct gm_td_reader gm_td_reader;

/* Opens path ("-" for standard input); max_line 0 means the default. */
int gm_td_open(const char *path, size_t max_line, gm_td_reader **out, gm_error *err);
/*
 * Reads the JSONL text data[0..len) (copied; len may be 0) as a file named
 * name in errors ("NAME:LINE: reason"): an HTTP body, a piece of a file
 * that grows.
 */
int gm_td_open_mem(const char *name, const char *data, size_t len, size_t max_line, gm_td_reader **out,
		   gm_error *err);
void gm_td_close(gm_td_reader *r);
/* "FILE" as errors name it. */
const char *gm_td_name(const gm_td_reader *r);

/*
 * Reads the next example.  Returns 1 with *ex filled, 0 at the end of the
 * file, GM_EFORMAT for a bad line ("FILE:LINE: reason"; the reader is past
 * that line and the caller may go on), or another negative code for a read
 * error (the caller must stop).
 */
int gm_td_next(gm_td_reader *r, gm_td_example *ex, gm_error *err);

typedef struct gm_td_stats {
	unsigned long count[GM_TD_KIND_COUNT];
	unsigned long examples; /* valid examples */
	unsigned long errors;   /* bad lines, all of them */
	unsigned long lines;    /* lines read */
} gm_td_stats;

/* Called for each bad line, up to the limit. */
typedef void (*gm_td_error_fn)(void *ctx, const gm_error *line_error);

/*
 * Checks the whole file: counts the examples of each kind, and calls
 * on_error (when not NULL) for each of the first max_errors bad lines (0:
 * all).  Returns 0 when every line is good and there is at least one
 * example; GM_EFORMAT with the first bad line's message when any is bad (st
 * then counts them all), or "FILE: no examples" for an empty file; another
 * negative code when the file cannot be read.
 */
int gm_td_check(const char *path, size_t max_errors, gm_td_stats *st, gm_td_error_fn on_error,
		void *ctx, gm_error *err);

#endif
