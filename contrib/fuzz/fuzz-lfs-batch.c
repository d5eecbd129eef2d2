/*
 * fuzz-lfs-batch.c - libFuzzer target for the Git LFS Batch API answer
 * parser (gm_lfs_batch_answer, libcore/storage/lfs-transfer.c): the JSON an
 * LFS server (the Hugging Face hub, or anyone's) answers to
 * "POST .../objects/batch" before `git model clone/fetch/push` transfers.
 *
 * Each input is the body of a 200 answer, applied to a request for three
 * objects, once as a download and once as an upload.  Invariants: a failed
 * request explains itself (a negative code and a message naming the
 * objects); a download that succeeds gave every object an action; an
 * upload that succeeds gave each object an action or found it present;
 * never more actions than objects.  The parser itself refuses hrefs that
 * are not http(s), header names or values that would inject headers, and
 * entries whose "oid" is not a string.
 */
#include "storage/lfs.h"
#include "storage/lfs-transfer.h"
#include "fuzz-common.h"

/* The oids the seeds answer for (sha256 of "a\n", "b\n" and ""). */
static const char *const oids[] = {
	"87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7",
	"0263829989b6fd954f72baaf2fc64bc2e2f01d692d4de72986ea808f6e99813f",
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
};
static gm_lfs_object_list list;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	gm_lfs_object_list_add(&list, oids[0], 2, "a.bin");
	gm_lfs_object_list_add(&list, oids[1], 2, NULL);
	gm_lfs_object_list_add(&list, oids[2], 0, "empty.bin");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int upload;

	for (upload = 0; upload < 2; upload++) {
		gm_error err = GM_ERROR_INIT;
		size_t ready = (size_t)-1;
		int ret = gm_lfs_batch_answer((const char *)data, size, &list, upload, &ready, &err);

		CHECK(ready <= list.n);
		if (ret) {
			CHECK_REFUSAL(ret, err);
			CHECK(ready < list.n);
		} else {
			fuzz_accepted(upload ? "upload answer" : "download answer");
		}
		if (!ret && !upload) {
			CHECK(ready == list.n);
		}
	}
	return 0;
}
