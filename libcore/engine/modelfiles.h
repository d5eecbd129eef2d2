/*
 * modelfiles.h - a model's tokenizer and chat template, wherever the model
 * keeps them: tokenizer.json / tokenizer_config.json in a model directory,
 * or the metadata of a GGUF file (gm_gguf_tokenizer_json,
 * gm_gguf_chat_template).  MODEL is what gm_model_open takes: a directory
 * or a .gguf file.
 */
#ifndef GM_MODELFILES_H
#define GM_MODELFILES_H

#include "base/error.h"
#include "text/chat.h"
#include "text/tokenizer.h"

int gm_model_tokenizer_load(const char *model, gm_tokenizer **out, gm_error *err);
int gm_model_chat_template_load(const char *model, gm_chat_template **out, gm_error *err);

#endif
