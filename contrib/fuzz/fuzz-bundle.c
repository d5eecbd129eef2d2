/*
 * fuzz-bundle.c - libFuzzer target for model bundles
 * (gm_repo_bundle_unpack, libcore/storage/bundle.c): the tar archive that
 * `git model bundle` writes and `git model clone FILE.tar` reads from
 * anyone.
 *
 * Each input is a bundle file, unpacked into a new repository in a scratch
 * directory, which is removed afterwards.  Invariants: a refusal explains
 * itself and names no head commit; an accepted bundle names a head commit
 * (40 hex digits) that the new repository resolves HEAD to.  The members
 * are checked by the reader against the manifest's sizes and sha256, so
 * the fuzzer mostly explores the tar reader (libarchive), the manifest
 * and the order and names of members; the seeds are real bundles.
 */
#include <ctype.h>

#include "storage/bundle.h"
#include "storage/repo.h"
#include "fuzz-common.h"

static char file[300], dir[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	gm_error err = GM_ERROR_INIT;

	(void)argc;
	(void)argv;
	snprintf(file, sizeof(file), "%s/bundle.tar", fuzz_scratch_dir("bundle"));
	snprintf(dir, sizeof(dir), "%s/repo", fuzz_scratch_dir("bundle"));
	/* No user or system git configuration leaks in. */
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	setenv("HOME", fuzz_scratch_dir("bundle"), 1);
	if (gm_repo_global_init(&err)) {
		fprintf(stderr, "fuzz-bundle: %s\n", err.msg);
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_error err = GM_ERROR_INIT;
	char *head = NULL;
	int ret, i;

	fuzz_write_file(file, data, size);
	gm_remove_tree(dir, NULL);
	ret = gm_repo_bundle_unpack(file, dir, &head, &err);
	if (ret) {
		CHECK_REFUSAL(ret, err);
		CHECK(head == NULL);
	} else {
		gm_repo *r = NULL;
		char hex[GM_REPO_OID_HEXLEN + 1];

		fuzz_accepted("bundle");
		CHECK(head && strlen(head) == GM_REPO_OID_HEXLEN);
		for (i = 0; i < GM_REPO_OID_HEXLEN; i++)
			CHECK(isxdigit((unsigned char)head[i]));
		CHECK(!gm_repo_open(dir, &r, &err));
		CHECK(!gm_repo_resolve(r, NULL, hex, &err) && !strcmp(hex, head));
		gm_repo_close(r);
	}
	free(head);
	gm_remove_tree(dir, NULL);
	return 0;
}
