/*
 * asset.h - data files compiled into libcore.
 *
 * The real Qwen3 tokenizer (tokenizer.json, tokenizer_config.json and its
 * LICENSE) is embedded so that `git model synth` writes complete model
 * directories without network access or installed data files.
 * tokenizer.json is stored xz-compressed (11 MB -> 1.4 MB) and inflated
 * with libarchive on demand.
 */
#ifndef GM_ASSET_H
#define GM_ASSET_H

#include "base/buf.h"
#include "base/error.h"

/* Names: "qwen3/tokenizer.json", "qwen3/tokenizer_config.json", "qwen3/LICENSE".
 * Appends the (decompressed) contents to out. */
int gm_asset_read(const char *name, gm_buf *out, gm_error *err);

#endif
