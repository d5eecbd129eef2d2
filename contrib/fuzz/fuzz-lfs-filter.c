/*
 * fuzz-lfs-filter.c - libFuzzer target for git's long-running filter
 * protocol as `git model lfs filter-process` speaks it
 * (gm_lfs_filter_process, libcore/storage/lfs-filter.c).
 *
 * Each input is the byte stream git would send: pkt-lines with the
 * handshake, then clean and smudge requests with their content.  It is fed
 * through a file descriptor; the answers go to another one, over an LFS
 * store in a scratch directory that holds one object (the content
 * "hello\n", which the smudge seeds point to; a smudge of any other
 * pointer fails quickly, as the scratch git directory has no remote).
 * Invariants: a protocol error explains itself; every failed request
 * reported explains itself; the answer stream is well-formed pkt-lines
 * (lengths 4..65520, hex headers) and follows the protocol: the server's
 * handshake and capabilities, then for each request one status, and after
 * "status=success" the content and a final (possibly empty) status list;
 * never more answers than requests.
 */
#include "base/buf.h"
#include "storage/lfs.h"
#include "storage/lfs-filter.h"
#include "fuzz-common.h"

static gm_lfs_store store;
static char objects[400];

static void store_hello(void)
{
	gm_lfs_cleaner *c = NULL;
	gm_lfs_pointer p;
	gm_error err = GM_ERROR_INIT;

	if (gm_lfs_clean_begin(&store, &c, &err) || gm_lfs_clean_write(c, "hello\n", 6, &err) ||
	    gm_lfs_clean_finish(c, &p, &err)) {
		fprintf(stderr, "fuzz-lfs-filter: cannot store the object: %s\n", err.msg);
		abort();
	}
	gm_lfs_pointer_release(&p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char gitdir[340];
	gm_error err = GM_ERROR_INIT;

	(void)argc;
	(void)argv;
	snprintf(gitdir, sizeof(gitdir), "%s/git", fuzz_scratch_dir("filter"));
	mkdir(gitdir, 0700);
	unsetenv("GIT_LFS_SKIP_SMUDGE");
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	setenv("HOME", fuzz_scratch_dir("filter"), 1);
	if (gm_lfs_store_init(&store, gitdir, &err))
		abort();
	snprintf(objects, sizeof(objects), "%s", store.root);
	store_hello();
	return 0;
}

struct pkt {
	const uint8_t *data;
	size_t len;
	int flush;
};

/* The next packet of out at *pos: 1, 0 at the end; aborts on bad framing. */
static int next_pkt(const gm_buf *out, size_t *pos, struct pkt *p)
{
	char hdr[5];
	unsigned long n;

	if (*pos == out->len)
		return 0;
	CHECK(out->len - *pos >= 4);
	memcpy(hdr, out->buf + *pos, 4);
	hdr[4] = '\0';
	CHECK(strspn(hdr, "0123456789abcdef") == 4);
	n = strtoul(hdr, NULL, 16);
	CHECK(n == 0 || (n > 4 && n <= 65520));
	p->flush = n == 0;
	p->data = (const uint8_t *)out->buf + *pos + 4;
	p->len = n ? n - 4 : 0;
	CHECK(out->len - *pos - 4 >= p->len);
	*pos += 4 + p->len;
	return 1;
}

static int pkt_is(const struct pkt *p, const char *text)
{
	return !p->flush && p->len == strlen(text) && !memcmp(p->data, text, p->len);
}

/* Checks the answers; returns how many requests were answered. */
static size_t check_answers(const gm_buf *out)
{
	struct pkt p;
	size_t pos = 0, answers = 0;

	if (!out->len)
		return 0;
	CHECK(next_pkt(out, &pos, &p) && pkt_is(&p, "git-filter-server\n"));
	CHECK(next_pkt(out, &pos, &p) && pkt_is(&p, "version=2\n"));
	CHECK(next_pkt(out, &pos, &p) && p.flush);
	if (pos == out->len)
		return 0; /* the capabilities never came */
	for (;;) {
		CHECK(next_pkt(out, &pos, &p));
		if (p.flush)
			break;
		CHECK(pkt_is(&p, "capability=clean\n") || pkt_is(&p, "capability=smudge\n"));
	}
	while (next_pkt(out, &pos, &p)) {
		int success = pkt_is(&p, "status=success\n");

		CHECK(success || pkt_is(&p, "status=error\n"));
		CHECK(next_pkt(out, &pos, &p) && p.flush);
		answers++;
		if (!success)
			continue;
		do
			CHECK(next_pkt(out, &pos, &p));
		while (!p.flush);
		CHECK(next_pkt(out, &pos, &p));
		if (!p.flush) {
			CHECK(pkt_is(&p, "status=error\n"));
			CHECK(next_pkt(out, &pos, &p) && p.flush);
		}
	}
	return answers;
}

static size_t reports;

static void report(void *ctx, const char *path, const gm_error *e)
{
	(void)ctx;
	CHECK(path && e->code < 0 && e->msg[0]);
	reports++;
}

/* Requests in the input: packets "command=..." (an upper bound). */
static size_t count_requests(const uint8_t *data, size_t size)
{
	size_t n = 0;
	const uint8_t *p = data, *end = data + size;

	while ((p = memmem(p, (size_t)(end - p), "command=", 8))) {
		n++;
		p += 8;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int in = fuzz_memfd(data, size), out = fuzz_memfd(NULL, 0);
	gm_error err = GM_ERROR_INIT;
	gm_buf answer = GM_BUF_INIT;
	size_t answers;
	off_t end;
	int ret;

	reports = 0;
	ret = gm_lfs_filter_process(&store, in, out, report, NULL, &err);
	if (ret)
		CHECK_REFUSAL(ret, err);
	else
		fuzz_accepted("filter-process stream");
	end = lseek(out, 0, SEEK_END);
	CHECK(end >= 0);
	gm_buf_grow(&answer, (size_t)end + 1);
	CHECK(pread(out, answer.buf, (size_t)end, 0) == end);
	answer.len = (size_t)end;
	answers = check_answers(&answer);
	CHECK(answers <= count_requests(data, size));
	CHECK(reports <= answers);
	CHECK(ret || answer.len > 0);
	gm_buf_release(&answer);
	close(in);
	close(out);
	/* Back to the one object: what cleans stored must not pile up on tmpfs. */
	gm_remove_tree(objects, NULL);
	store_hello();
	return 0;
}
