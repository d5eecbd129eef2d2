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

/*
 * GM_INCBIN_PATH(sym, "/abs/path/file") at file scope: the file's bytes in
 * .rodata between sym_start and sym_end (followed by a NUL byte, not
 * counted), hidden symbols.  The path is a string literal, absolute (make
 * passes the source directory), so that out-of-tree builds find it; the
 * object file must depend on the file in Makefile.am, since the compiler
 * does not know it reads it.  Used by asset.c and the server's web page.
 */
#define GM_INCBIN_PATH(sym, path)                                     \
	__asm__(".section .rodata\n"                                  \
		".balign 16\n"                                        \
		".hidden " #sym "_start\n"                            \
		".hidden " #sym "_end\n"                              \
		#sym "_start:\n"                                      \
		".incbin \"" path "\"\n"                              \
		#sym "_end:\n"                                        \
		".byte 0\n"                                           \
		".previous\n");                                       \
	extern const char sym##_start[], sym##_end[]

#endif
