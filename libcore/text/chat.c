/*
 * chat.c - tokenizer_config.json's chat template, rendered as transformers'
 * apply_chat_template(tokenize=False) renders it.
 */
#include "text/chat.h"

#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "text/jinja.h"
#include "base/json.h"

struct gm_chat_template {
	gm_jinja_template *tmpl;
	/* Special tokens the template may use; NULL when unset (then undefined in the template). */
	char *bos_token, *eos_token, *pad_token, *unk_token;
	char *source; /* the template text, NUL-terminated */
};

/* A special token: a string, or an AddedToken object {"content": ...}; null or absent gives NULL. */
static int special_token(json_object *cfg, const char *key, const char *what, char **out, gm_error *err)
{
	json_object *v, *content;

	*out = NULL;
	if (!json_object_object_get_ex(cfg, key, &v) || !v)
		return 0;
	if (json_object_is_type(v, json_type_string)) {
		*out = gm_xstrdup(json_object_get_string(v));
		return 0;
	}
	if (json_object_is_type(v, json_type_object) && json_object_object_get_ex(v, "content", &content) &&
	    json_object_is_type(content, json_type_string)) {
		*out = gm_xstrdup(json_object_get_string(content));
		return 0;
	}
	return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be a string or an object with a string \"content\"",
			    what, key);
}

/*
 * The template source: "chat_template" as a string, or as a list of
 * {"name", "template"} from which "default" is taken.  Newer checkpoints
 * keep it in chat_template.jinja beside tokenizer_config.json instead.
 */
static int template_source(json_object *cfg, const char *what, const char *dir, gm_buf *src, gm_error *err)
{
	json_object *v;
	size_t i;

	if (!json_object_object_get_ex(cfg, "chat_template", &v) || !v) {
		char *alt = gm_path_join(dir, "chat_template.jinja");
		int ret;

		if (!gm_is_file(alt)) {
			free(alt);
			return gm_error_set(err, GM_ENOENT,
					    "%s: no \"chat_template\" (and no chat_template.jinja beside it); "
					    "this model has no chat template, use a plain prompt", what);
		}
		ret = gm_read_file(alt, src, err);
		free(alt);
		return ret;
	}
	if (json_object_is_type(v, json_type_string)) {
		gm_buf_add(src, json_object_get_string(v), (size_t)json_object_get_string_len(v));
		return 0;
	}
	if (json_object_is_type(v, json_type_array)) {
		for (i = 0; i < json_object_array_length(v); i++) {
			json_object *item = json_object_array_get_idx(v, i), *name, *tmpl;

			if (json_object_object_get_ex(item, "name", &name) &&
			    json_object_is_type(name, json_type_string) &&
			    !strcmp(json_object_get_string(name), "default") &&
			    json_object_object_get_ex(item, "template", &tmpl) &&
			    json_object_is_type(tmpl, json_type_string)) {
				gm_buf_add(src, json_object_get_string(tmpl), (size_t)json_object_get_string_len(tmpl));
				return 0;
			}
		}
		return gm_error_set(err, GM_ENOENT, "%s: \"chat_template\" lists no template named \"default\"", what);
	}
	return gm_error_set(err, GM_EFORMAT, "%s: \"chat_template\" must be a string or a list of named templates",
			    what);
}

int gm_chat_template_load(const char *path, gm_chat_template **out, gm_error *err)
{
	char *file, *dir, *slash, *what;
	json_object *cfg = NULL;
	gm_buf src = GM_BUF_INIT;
	gm_chat_template *t;
	int ret;

	*out = NULL;
	if (gm_is_dir(path)) {
		file = gm_path_join(path, "tokenizer_config.json");
		dir = gm_xstrdup(path);
	} else {
		file = gm_xstrdup(path);
		dir = gm_xstrdup(path);
		slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		else
			strcpy(dir, ".");
	}
	t = gm_xcalloc(1, sizeof(*t));
	what = NULL;
	if ((ret = gm_json_parse_file(file, &cfg, err)))
		goto done;
	if (!json_object_is_type(cfg, json_type_object)) {
		ret = gm_error_set(err, GM_EFORMAT, "%s: expected a JSON object", file);
		goto done;
	}
	if ((ret = special_token(cfg, "bos_token", file, &t->bos_token, err)) ||
	    (ret = special_token(cfg, "eos_token", file, &t->eos_token, err)) ||
	    (ret = special_token(cfg, "pad_token", file, &t->pad_token, err)) ||
	    (ret = special_token(cfg, "unk_token", file, &t->unk_token, err)) ||
	    (ret = template_source(cfg, file, dir, &src, err)))
		goto done;
	what = gm_xmalloc(strlen(file) + sizeof(": chat_template"));
	strcpy(what, file);
	strcat(what, ": chat_template");
	ret = gm_jinja_parse(src.buf, src.len, what, &t->tmpl, err);
	if (!ret) {
		t->source = gm_xmalloc(src.len + 1);
		memcpy(t->source, src.buf, src.len);
		t->source[src.len] = '\0';
	}
done:
	json_object_put(cfg);
	gm_buf_release(&src);
	free(what);
	free(file);
	free(dir);
	if (ret) {
		gm_chat_template_free(t);
		return ret;
	}
	*out = t;
	return 0;
}

int gm_chat_template_parse(const char *src, size_t len, const char *what, const char *bos_token,
			   const char *eos_token, gm_chat_template **out, gm_error *err)
{
	gm_chat_template *t = gm_xcalloc(1, sizeof(*t));
	int ret;

	*out = NULL;
	if ((ret = gm_jinja_parse(src, len, what, &t->tmpl, err))) {
		free(t);
		return ret;
	}
	t->bos_token = bos_token ? gm_xstrdup(bos_token) : NULL;
	t->eos_token = eos_token ? gm_xstrdup(eos_token) : NULL;
	t->source = gm_xmalloc(len + 1);
	memcpy(t->source, src, len);
	t->source[len] = '\0';
	*out = t;
	return 0;
}

void gm_chat_template_free(gm_chat_template *t)
{
	if (!t)
		return;
	gm_jinja_free(t->tmpl);
	free(t->bos_token);
	free(t->eos_token);
	free(t->pad_token);
	free(t->unk_token);
	free(t->source);
	free(t);
}

static void add_token(json_object *ctx, const char *key, const char *value)
{
	if (value)
		json_object_object_add(ctx, key, json_object_new_string(value));
}

void gm_chat_render_opts_init(gm_chat_render_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->add_generation_prompt = 1;
	o->enable_thinking = GM_CHAT_THINKING_UNSET;
}

const char *gm_chat_template_source(const gm_chat_template *t)
{
	return t->source;
}

int gm_chat_render(const gm_chat_template *t, json_object *messages, int add_generation_prompt,
		   enum gm_chat_thinking enable_thinking, gm_buf *out, gm_error *err)
{
	gm_chat_render_opts o;

	gm_chat_render_opts_init(&o);
	o.messages = messages;
	o.add_generation_prompt = add_generation_prompt;
	o.enable_thinking = enable_thinking;
	return gm_chat_render_ex(t, &o, out, err);
}

int gm_chat_render_ex(const gm_chat_template *t, const gm_chat_render_opts *o, gm_buf *out, gm_error *err)
{
	json_object *ctx;
	int ret;

	if (!json_object_is_type(o->messages, json_type_array))
		return gm_error_set(err, GM_EINVAL, "chat messages must be a JSON array of {\"role\", \"content\"}");
	if (o->tools && !json_object_is_type(o->tools, json_type_array))
		return gm_error_set(err, GM_EINVAL, "chat tools must be a JSON array of OpenAI tool objects");
	if (o->extra && !json_object_is_type(o->extra, json_type_object))
		return gm_error_set(err, GM_EINVAL, "extra chat template variables must be a JSON object");
	/*
	 * As transformers: tools (when not given) and documents are passed as
	 * None, the special tokens that are set are defined, enable_thinking
	 * only when given; further kwargs are template variables.
	 */
	ctx = json_object_new_object();
	if (o->extra) {
		json_object_object_foreach(o->extra, key, val)
			json_object_object_add(ctx, key, json_object_get(val));
	}
	json_object_object_add(ctx, "messages", json_object_get(o->messages));
	json_object_object_add(ctx, "tools", o->tools ? json_object_get(o->tools) : NULL);
	if (!json_object_object_get_ex(ctx, "documents", NULL))
		json_object_object_add(ctx, "documents", NULL);
	json_object_object_add(ctx, "add_generation_prompt", json_object_new_boolean(o->add_generation_prompt));
	if (o->enable_thinking != GM_CHAT_THINKING_UNSET)
		json_object_object_add(ctx, "enable_thinking",
				       json_object_new_boolean(o->enable_thinking == GM_CHAT_THINKING_ON));
	add_token(ctx, "bos_token", t->bos_token);
	add_token(ctx, "eos_token", t->eos_token);
	add_token(ctx, "pad_token", t->pad_token);
	add_token(ctx, "unk_token", t->unk_token);
	ret = gm_jinja_render(t->tmpl, ctx, out, err);
	json_object_put(ctx);
	return ret;
}
