/*
 * chat.h - a model's chat template (tokenizer_config.json's chat_template,
 * executed with jinja.h) turned into a prompt, as transformers'
 * apply_chat_template(tokenize=False) does.
 */
#ifndef GM_CHAT_H
#define GM_CHAT_H

#include <json-c/json.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct gm_chat_template gm_chat_template;

/* Reads DIR/tokenizer_config.json (or a path to it): chat_template, bos_token, eos_token. */
int gm_chat_template_load(const char *path, gm_chat_template **out, gm_error *err);
/*
 * A template from its source text src[0..len) (a chat_template.jinja file,
 * a test fixture); bos_token and eos_token may be NULL (then undefined in
 * the template).  what names it in errors.
 */
int gm_chat_template_parse(const char *src, size_t len, const char *what, const char *bos_token,
			   const char *eos_token, gm_chat_template **out, gm_error *err);
void gm_chat_template_free(gm_chat_template *t);

enum gm_chat_thinking { GM_CHAT_THINKING_UNSET = -1, GM_CHAT_THINKING_OFF = 0, GM_CHAT_THINKING_ON = 1 };

/*
 * Renders messages (a JSON array of {"role": ..., "content": ...}, borrowed)
 * and appends the prompt to out.  enable_thinking UNSET leaves the variable
 * undefined, as transformers does when it is not passed.  As in transformers,
 * tools and documents are none, and bos_token, eos_token, pad_token and
 * unk_token are defined only when the config sets them.
 */
int gm_chat_render(const gm_chat_template *t, json_object *messages, int add_generation_prompt,
		   enum gm_chat_thinking enable_thinking, gm_buf *out, gm_error *err);

/* Everything apply_chat_template can be given; all JSON values borrowed. */
typedef struct gm_chat_render_opts {
	json_object *messages;     /* array; may hold tool_calls and "tool" role messages */
	json_object *tools;        /* OpenAI tools array, or NULL: none, as transformers passes None */
	json_object *extra;        /* object of further template variables (kwargs), or NULL */
	int add_generation_prompt;
	enum gm_chat_thinking enable_thinking;
} gm_chat_render_opts;

void gm_chat_render_opts_init(gm_chat_render_opts *o);
int gm_chat_render_ex(const gm_chat_template *t, const gm_chat_render_opts *o, gm_buf *out, gm_error *err);

/* The template's source text (to recognize the model family's tool-call format). */
const char *gm_chat_template_source(const gm_chat_template *t);

#endif
