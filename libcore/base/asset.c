/* asset.c - embedded data files (see asset.h). */
#include "base/asset.h"

#include <archive.h>
#include <string.h>

/* GM_ASSET_DIR is the absolute source path of libcore/data (set by make),
 * so out-of-tree builds find the files. */
#define GM_INCBIN(sym, file) GM_INCBIN_PATH(sym, GM_ASSET_DIR "/" file)

GM_INCBIN(gm_qwen3_tokenizer_xz, "qwen3-tokenizer.json.xz");
GM_INCBIN(gm_qwen3_tokenizer_config, "qwen3-tokenizer_config.json");
GM_INCBIN(gm_qwen3_license, "QWEN3-LICENSE");

static int inflate_xz(const char *data, size_t len, const char *name, gm_buf *out, gm_error *err)
{
	struct archive *a = archive_read_new();
	struct archive_entry *entry;
	char chunk[65536];
	int ret = 0;

	if (!a)
		return gm_error_set(err, GM_ENOMEM, "cannot allocate a decompressor for %s", name);
	archive_read_support_filter_xz(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_memory(a, data, len) != ARCHIVE_OK ||
	    archive_read_next_header(a, &entry) != ARCHIVE_OK) {
		ret = gm_error_set(err, GM_EFORMAT, "cannot decompress embedded %s: %s", name,
				   archive_error_string(a));
		goto out;
	}
	for (;;) {
		la_ssize_t n = archive_read_data(a, chunk, sizeof(chunk));
		if (n < 0) {
			ret = gm_error_set(err, GM_EFORMAT, "cannot decompress embedded %s: %s", name,
					   archive_error_string(a));
			break;
		}
		if (!n)
			break;
		gm_buf_add(out, chunk, (size_t)n);
	}
out:
	archive_read_free(a);
	return ret;
}

int gm_asset_read(const char *name, gm_buf *out, gm_error *err)
{
	if (!strcmp(name, "qwen3/tokenizer.json"))
		return inflate_xz(gm_qwen3_tokenizer_xz_start,
				  (size_t)(gm_qwen3_tokenizer_xz_end - gm_qwen3_tokenizer_xz_start), name,
				  out, err);
	if (!strcmp(name, "qwen3/tokenizer_config.json")) {
		gm_buf_add(out, gm_qwen3_tokenizer_config_start,
			   (size_t)(gm_qwen3_tokenizer_config_end - gm_qwen3_tokenizer_config_start));
		return 0;
	}
	if (!strcmp(name, "qwen3/LICENSE")) {
		gm_buf_add(out, gm_qwen3_license_start,
			   (size_t)(gm_qwen3_license_end - gm_qwen3_license_start));
		return 0;
	}
	return gm_error_set(err, GM_ENOENT, "no embedded asset named '%s'", name);
}
