/*
 * fuzz-lfs-pointer.c - libFuzzer target for Git LFS pointer files
 * (gm_lfs_pointer_parse in libcore/storage/lfs.c).
 *
 * Pointers come from any repository one clones.  The parser is strict: it
 * takes exactly what git-lfs writes, so an accepted input must be its own
 * canonical form: gm_lfs_pointer_format gives back the very same bytes,
 * and parsing those gives the same pointer.  A refusal must explain
 * itself, and gm_lfs_is_pointer must agree with the parser.
 */
#include "base/buf.h"
#include "storage/lfs.h"
#include "fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_lfs_pointer p, q;
	gm_error err = GM_ERROR_INIT;
	gm_buf out = GM_BUF_INIT;
	size_t i;
	int ret = gm_lfs_pointer_parse(data, size, &p, &err);

	CHECK(gm_lfs_is_pointer(data, size) == !ret);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(p.n_ext == 0 && p.ext == NULL);
		return 0;
	}
	fuzz_accepted("pointer");
	CHECK(size < GM_LFS_POINTER_MAX);
	CHECK(gm_lfs_oid_valid(p.oid));
	for (i = 0; i < p.n_ext; i++) {
		CHECK(!strncmp(p.ext[i].key, "ext-", 4) && !strchr(p.ext[i].key, ' '));
		CHECK(!strncmp(p.ext[i].value, "sha256:", 7) && gm_lfs_oid_valid(p.ext[i].value + 7));
	}
	gm_lfs_pointer_format(&p, &out);
	if (out.len != size || memcmp(out.buf, data, size)) {
		fprintf(stderr, "an accepted pointer is not canonical:\n%.*s---\n%s", (int)size, (const char *)data,
			out.buf);
		abort();
	}
	CHECK(!gm_lfs_pointer_parse(out.buf, out.len, &q, &err));
	CHECK(!strcmp(p.oid, q.oid) && p.size == q.size && p.n_ext == q.n_ext);
	for (i = 0; i < p.n_ext; i++)
		CHECK(!strcmp(p.ext[i].key, q.ext[i].key) && !strcmp(p.ext[i].value, q.ext[i].value));
	gm_lfs_pointer_release(&q);
	gm_lfs_pointer_release(&p);
	gm_buf_release(&out);
	return 0;
}
