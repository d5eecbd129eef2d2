/* modelfiles.c - a model's tokenizer and chat template from a directory or a GGUF file (see modelfiles.h). */
#include "engine/modelfiles.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "formats/gguf.h"

int gm_model_tokenizer_load(const char *model, gm_tokenizer **out, gm_error *err)
{
	gm_buf json = GM_BUF_INIT;
	gm_gguf *g = NULL;
	int ret;

	if (!gm_gguf_is_file(model))
		return gm_tokenizer_load(model, out, err);
	*out = NULL;
	/* the metadata only: the tensors stay unread in the mapping */
	if (!(ret = gm_gguf_open(model, &g, err)) && !(ret = gm_gguf_tokenizer_json(g, &json, err)))
		ret = gm_tokenizer_load_memory(json.buf, json.len, model, out, err);
	gm_gguf_close(g);
	gm_buf_release(&json);
	return ret;
}

int gm_model_chat_template_load(const char *model, gm_chat_template **out, gm_error *err)
{
	char *tmpl = NULL, *bos = NULL, *eos = NULL, *what;
	gm_gguf *g = NULL;
	int ret;

	if (!gm_gguf_is_file(model))
		return gm_chat_template_load(model, out, err);
	*out = NULL;
	what = gm_xmalloc(strlen(model) + sizeof(": tokenizer.chat_template"));
	strcpy(what, model);
	strcat(what, ": tokenizer.chat_template");
	if (!(ret = gm_gguf_open(model, &g, err)) && !(ret = gm_gguf_chat_template(g, &tmpl, &bos, &eos, err)))
		ret = gm_chat_template_parse(tmpl, strlen(tmpl), what, bos, eos, out, err);
	gm_gguf_close(g);
	free(tmpl);
	free(bos);
	free(eos);
	free(what);
	return ret;
}
