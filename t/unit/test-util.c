/*
 * test-util.c - unit tests for libcore's utilities: error, buf, fs, json,
 * opts, rng and the embedded assets.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/asset.h"
#include "base/buf.h"
#include "formats/dtype.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/opts.h"
#include "base/rng.h"
#include "tap.h"
#include "cpu/threadpool.h"

static void test_error(void)
{
	gm_error err = GM_ERROR_INIT;
	int ret;

	ret = gm_error_set(&err, GM_EFORMAT, "bad %s at %d", "header", 7);
	ok(ret == GM_EFORMAT && err.code == GM_EFORMAT && !strcmp(err.msg, "bad header at 7"),
	   "gm_error_set returns the code and formats the message");
	gm_error_prefix(&err, "model.safetensors");
	ok(!strcmp(err.msg, "model.safetensors: bad header at 7"), "gm_error_prefix prepends context");
	errno = ENOENT;
	ret = gm_error_errno(&err, "cannot open '%s'", "x");
	ok(ret == GM_ENOENT && strstr(err.msg, "cannot open 'x': ") && strstr(err.msg, strerror(ENOENT)),
	   "gm_error_errno maps ENOENT and appends strerror");
	ok(gm_error_set(NULL, GM_EINVAL, "ignored") == GM_EINVAL, "a NULL error object is allowed");
	{
		char longp[2000];
		memset(longp, 'p', sizeof(longp) - 1);
		longp[sizeof(longp) - 1] = '\0';
		gm_error_set(&err, GM_EIO, "tail");
		gm_error_prefix(&err, "%s", longp);
		ok(strlen(err.msg) == GM_ERROR_MSG_MAX - 1, "an over-long message is truncated, not overflowed");
	}
	gm_error_clear(&err);
	ok(err.code == 0 && !err.msg[0], "gm_error_clear empties the error");
}

static void test_buf(void)
{
	gm_buf b = GM_BUF_INIT;
	char *s;
	size_t len;
	int i;

	ok(b.len == 0 && b.buf[0] == '\0', "an initialized buffer is an empty string");
	for (i = 0; i < 1000; i++)
		gm_buf_addf(&b, "%d,", i);
	ok(b.len == strlen(b.buf) && !strncmp(b.buf, "0,1,2,", 6) && !strcmp(b.buf + b.len - 4, "999,"),
	   "gm_buf_addf grows and stays NUL-terminated");
	gm_buf_reset(&b);
	gm_buf_add(&b, "a\0b", 3);
	ok(b.len == 3 && b.buf[1] == '\0' && b.buf[3] == '\0', "gm_buf_add keeps embedded NULs");
	s = gm_buf_detach(&b, &len);
	ok(len == 3 && b.len == 0 && b.buf[0] == '\0', "gm_buf_detach hands over and empties");
	free(s);
	gm_buf_add_human_bytes(&b, 512);
	gm_buf_adds(&b, "|");
	gm_buf_add_human_bytes(&b, 1536);
	gm_buf_adds(&b, "|");
	gm_buf_add_human_bytes(&b, 1288490189ULL);
	ok(!strcmp(b.buf, "512 bytes|1.50 KiB|1.20 GiB"), "human-readable sizes (%s)", b.buf);
	gm_buf_reset(&b);
	gm_buf_add_human_count(&b, 999);
	gm_buf_adds(&b, "|");
	gm_buf_add_human_count(&b, 663120);
	gm_buf_adds(&b, "|");
	gm_buf_add_human_count(&b, 999960);
	gm_buf_adds(&b, "|");
	gm_buf_add_human_count(&b, 596049920ULL);
	gm_buf_adds(&b, "|");
	gm_buf_add_human_count(&b, 7000000000000000ULL);
	ok(!strcmp(b.buf, "999|663.1K|1.0M|596.0M|7000.0T"), "human-readable counts (%s)", b.buf);
	gm_buf_release(&b);
}

static void test_json_double(void)
{
	static const struct {
		double d;
		const char *want;
	} cases[] = {
		{ 0.7, "0.7" }, { 1e6, "1000000.0" }, { 1e-6, "1e-06" }, { 0.0001, "0.0001" },
		{ 1e16, "1e+16" }, { 3.0, "3.0" }, { -0.05, "-0.05" }, { 0.0, "0.0" },
		{ 151643.0, "151643.0" }, { 1.0 / 3.0, "0.3333333333333333" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_object *o = gm_json_new_double(cases[i].d);
		const char *got = json_object_to_json_string(o);

		ok(!strcmp(got, cases[i].want), "gm_json_new_double(%.17g) is %s as Python writes it (got %s)",
		   cases[i].d, cases[i].want, got);
		json_object_put(o);
	}
}

static void test_dtype_mix(void)
{
	uint64_t numel[GM_DTYPE_COUNT] = { 0 };
	char out[64], tiny[6];

	gm_dtype_mix_name(numel, out, sizeof(out));
	ok(!strcmp(out, "none"), "no elements: none");
	numel[GM_DTYPE_BF16] = 100;
	gm_dtype_mix_name(numel, out, sizeof(out));
	ok(!strcmp(out, "bf16"), "one dtype, lower case (%s)", out);
	numel[GM_DTYPE_F32] = 1000;
	numel[GM_DTYPE_I64] = 1;
	gm_dtype_mix_name(numel, out, sizeof(out));
	ok(!strcmp(out, "f32+bf16+i64"), "most elements first (%s)", out);
	gm_dtype_mix_name(numel, tiny, sizeof(tiny));
	ok(!strcmp(tiny, "f32+b"), "truncated to the buffer (%s)", tiny);
}

static char tmpdir[PATH_MAX];

static int count_entries(const char *dir)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

static void test_fs(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_atomic_file f;
	gm_buf b = GM_BUF_INIT;
	char *path, *deep;
	struct stat st;

	path = gm_path_join(tmpdir, "file.txt");
	ok(!gm_write_file_atomic(path, "old\n", 4, 0644, &err), "atomic write creates a file");
	ok(!gm_atomic_open(&f, path, 0644, &err) && !gm_atomic_write(&f, "new", 3, &err),
	   "atomic open and write");
	gm_read_file(path, &b, &err);
	ok(!strcmp(b.buf, "old\n"), "the final name keeps the old content until commit");
	ok(count_entries(tmpdir) == 2, "the temporary file lives beside the target");
	gm_atomic_abort(&f);
	ok(count_entries(tmpdir) == 1, "abort removes the temporary file");
	gm_buf_reset(&b);
	gm_read_file(path, &b, &err);
	ok(!strcmp(b.buf, "old\n"), "abort leaves the old content");
	ok(!gm_atomic_open(&f, path, 0600, &err) && !gm_atomic_write(&f, "new", 3, &err) &&
	   !gm_atomic_commit(&f, &err), "commit renames into place");
	gm_buf_reset(&b);
	gm_read_file(path, &b, &err);
	ok(!strcmp(b.buf, "new") && count_entries(tmpdir) == 1, "after commit: new content, no leftovers");
	ok(stat(path, &st) == 0 && (st.st_mode & 0777) == (0600 & ~(mode_t)umask(umask(0))),
	   "the requested mode is applied");
	{
		/* a killed writer's temporary (no lock held), a live one's, another file's */
		char *stale = gm_path_join(tmpdir, ".file.txt.tmp-AbC123"), *other = gm_path_join(tmpdir, ".x.tmp-AbC123");

		ok(!gm_write_file_atomic(stale, "x", 1, 0644, &err) && !gm_write_file_atomic(other, "x", 1, 0644, &err),
		   "leftover temporaries made");
		ok(!gm_atomic_open(&f, path, 0644, &err), "a live writer of the same file");
		ok(gm_atomic_remove_stale(path) == 1 && !gm_is_file(stale) && gm_is_file(f.tmp_path) && gm_is_file(other),
		   "gm_atomic_remove_stale removes the killed writer's temporary only");
		gm_atomic_abort(&f);
		ok(gm_atomic_remove_stale(path) == 0 && count_entries(tmpdir) == 2, "nothing else to remove");
		unlink(other);
		free(stale);
		free(other);
	}
	free(path);

	path = gm_path_join(tmpdir, "no/such/dir/file");
	ok_error(gm_write_file_atomic(path, "x", 1, 0644, &err), &err, GM_ENOENT, "cannot create a temporary file",
		 "a missing directory is reported");
	free(path);
	deep = gm_path_join(tmpdir, "a/b/c");
	ok(!gm_mkdir_p(deep, 0755, &err) && gm_is_dir(deep), "gm_mkdir_p creates every level");
	ok(!gm_mkdir_p(deep, 0755, &err), "gm_mkdir_p accepts an existing directory");
	free(deep);
	path = gm_path_join(tmpdir, "file.txt/sub");
	ok(gm_mkdir_p(path, 0755, &err) != 0, "gm_mkdir_p refuses a path through a file");
	free(path);
	path = gm_path_join("dir/", "x");
	ok(!strcmp(path, "dir/x"), "gm_path_join does not double slashes");
	free(path);
	gm_buf_reset(&b);
	ok_error(gm_read_file("/nonexistent/file", &b, &err), &err, GM_ENOENT, "/nonexistent/file",
		 "reading a missing file names it");
	gm_buf_release(&b);
}

static void test_json(void)
{
	gm_error err = GM_ERROR_INIT;
	json_object *o = NULL;
	int64_t i = 0;
	double d = 0;
	int flag = -1;
	const char *s = NULL;
	static const char doc[] = "{\"n\": 3, \"f\": 1e6, \"x\": 1.5, \"b\": true, \"s\": \"hi\", \"z\": null}  \n";

	ok(!gm_json_parse(doc, strlen(doc), "doc", &o, &err), "parse an object with trailing whitespace");
	ok(!gm_json_get_int64(o, "n", "doc", &i, &err) && i == 3, "integer");
	ok(!gm_json_get_int64(o, "f", "doc", &i, &err) && i == 1000000, "1e6 is accepted as an integer");
	ok_error(gm_json_get_int64(o, "x", "doc", &i, &err), &err, GM_EFORMAT, "doc: 'x' must be an integer, not double",
		 "1.5 is not an integer");
	ok(!gm_json_get_double(o, "n", "doc", &d, &err) && d == 3.0, "an integer is a number");
	ok(!gm_json_get_bool(o, "b", "doc", &flag, &err) && flag == 1, "boolean");
	ok(!gm_json_get_string(o, "s", "doc", &s, &err) && !strcmp(s, "hi"), "string");
	ok_error(gm_json_get_string(o, "n", "doc", &s, &err), &err, GM_EFORMAT, "'n' must be a string, not int",
		 "type errors name the key and both types");
	ok_error(gm_json_get_int64(o, "missing", "doc", &i, &err), &err, GM_ENOENT, "doc: missing 'missing'",
		 "a missing key is GM_ENOENT");
	ok_error(gm_json_get_int64(o, "z", "doc", &i, &err), &err, GM_ENOENT, "missing 'z'", "null counts as missing");
	i = 42;
	ok(!gm_json_opt_int64(o, "missing", "doc", &i, &err) && i == 42, "optional getters keep the default");
	ok(gm_json_opt_int64(o, "s", "doc", &i, &err) == GM_EFORMAT, "optional getters still check types");
	json_object_put(o);
	o = NULL;
	ok_error(gm_json_parse("{\"a\": ", 6, "cfg.json", &o, &err), &err, GM_EFORMAT, "cfg.json: invalid JSON",
		 "truncated JSON is rejected");
	ok_error(gm_json_parse("{} x", 4, "cfg.json", &o, &err), &err, GM_EFORMAT, "trailing data at byte 3",
		 "trailing garbage is rejected with its position");
	ok_error(gm_json_parse("{\"a\" 1}", 7, "cfg.json", &o, &err), &err, GM_EFORMAT, "invalid JSON at byte",
		 "a syntax error gives the byte offset");
}

static void test_opts(void)
{
	gm_error err = GM_ERROR_INIT;
	const char *name = NULL;
	long n = 0;
	double t = 0;
	int flag = 0, verbose = 0;
	unsigned long long u = 0;
	gm_strlist list = { 0 };
	struct gm_option opts[] = {
		GM_OPT_STRING('m', "model", &name, "dir", "model"),
		GM_OPT_INT('n', "max-tokens", &n, "n", "count", 1, 100),
		GM_OPT_DOUBLE(0, "temperature", &t, "t", "temperature"),
		GM_OPT_FLAG(0, "check", &flag, "check"),
		GM_OPT_U64(0, "seed", &u, "n", "seed"),
		GM_OPT_STRING_LIST(0, "adapter", &list, "spec", "adapter"),
		GM_OPT_VERBOSITY(&verbose),
		GM_OPT_END()
	};
	const char *argv1[] = { "cmd", "-m", "dir", "pos1", "--max-tokens=7", "--temperature", "0.5",
				"-vv", "--check", "--adapter", "a", "--adapter=b", "--seed", "18446744073709551615",
				"--", "--not-an-option" };
	const char *argv2[] = { "cmd", "--check", "--no-check", "-mX", "-q" };
	const char *bad1[] = { "cmd", "--nope" };
	const char *bad2[] = { "cmd", "-n", "500" };
	const char *bad3[] = { "cmd", "--model" };
	const char *bad4[] = { "cmd", "--temperature=abc" };
	const char *bad5[] = { "cmd", "--check=1" };
	const char *bad6[] = { "cmd", "-x" };
	const char *help[] = { "cmd", "-h" };
	const char *stop[] = { "cmd", "-v", "sub", "--check" };
	int ret;

	ret = gm_parse_options(16, argv1, opts, 0, 0, &err);
	ok(ret == 2 && !strcmp(argv1[0], "pos1") && !strcmp(argv1[1], "--not-an-option"),
	   "non-options are kept in order, '--' ends options");
	ok(!strcmp(name, "dir") && n == 7 && t == 0.5 && flag == 1 && verbose == 2 &&
	   u == 18446744073709551615ULL, "every option type is parsed");
	ok(list.n == 2 && !strcmp(list.items[0], "a") && !strcmp(list.items[1], "b"), "repeatable options collect");
	gm_strlist_clear(&list);
	ret = gm_parse_options(5, argv2, opts, 0, 0, &err);
	ok(ret == 0 && flag == 0 && !strcmp(name, "X") && verbose == -1, "--no-FLAG, -mVALUE, -q");
	ok_error(gm_parse_options(2, bad1, opts, 0, 0, &err), &err, GM_PARSE_ERROR, "unknown option '--nope'",
		 "unknown long option");
	ok_error(gm_parse_options(3, bad2, opts, 0, 0, &err), &err, GM_PARSE_ERROR,
		 "option '-n' must be between 1 and 100, not 500", "integer range");
	ok_error(gm_parse_options(2, bad3, opts, 0, 0, &err), &err, GM_PARSE_ERROR,
		 "option '--model' requires a value (dir)", "missing value");
	ok_error(gm_parse_options(2, bad4, opts, 0, 0, &err), &err, GM_PARSE_ERROR,
		 "option '--temperature' expects a number, not 'abc'", "bad number");
	ok_error(gm_parse_options(2, bad5, opts, 0, 0, &err), &err, GM_PARSE_ERROR,
		 "option '--check' takes no value", "value given to a flag");
	ok_error(gm_parse_options(2, bad6, opts, 0, 0, &err), &err, GM_PARSE_ERROR, "unknown switch 'x'",
		 "unknown short option");
	ok(gm_parse_options(2, help, opts, 0, 0, &err) == GM_PARSE_HELP_SHORT, "-h asks for the usage");
	verbose = 0;
	ret = gm_parse_options(4, stop, opts, GM_PARSE_STOP_AT_NON_OPTION, 0, &err);
	ok(ret == 2 && !strcmp(stop[0], "sub") && !strcmp(stop[1], "--check") && verbose == 1,
	   "parsing stops at the subcommand");
}

static void test_rng(void)
{
	gm_rng a, b;
	float x[10001], y[10001];
	double sum = 0, sq = 0;
	int i, same = 1;

	gm_rng_seed(&a, 42);
	gm_rng_seed(&b, 42);
	gm_rng_normal(&a, x, 10001, 0.0f, 1.0f);
	gm_rng_normal(&b, y, 10001, 0.0f, 1.0f);
	for (i = 0; i < 10001; i++) {
		same &= x[i] == y[i];
		sum += x[i];
		sq += (double)x[i] * x[i];
	}
	ok(same, "same seed, same numbers");
	ok(sum / 10001 > -0.05 && sum / 10001 < 0.05 && sq / 10001 > 0.95 && sq / 10001 < 1.05,
	   "normal draws have mean ~0 and variance ~1 (%.4f, %.4f)", sum / 10001, sq / 10001);
	gm_rng_seed(&b, 43);
	gm_rng_normal(&b, y, 10, 0.0f, 1.0f);
	ok(x[0] != y[0] || x[1] != y[1], "another seed, other numbers");
	gm_rng_seed_stream(&a, 1, 2, 3);
	gm_rng_seed_stream(&b, 1, 3, 2);
	ok(gm_rng_next(&a) != gm_rng_next(&b), "stream coordinates are not symmetric");
	gm_rng_seed(&a, 0);
	ok(gm_rng_next(&a) == 0x99ec5f36cb75f2b4ULL, "xoshiro256** from splitmix64(0) matches its reference output");
}

static void test_assets(void)
{
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	json_object *o = NULL, *model = NULL, *vocab = NULL;

	ok(!gm_asset_read("qwen3/tokenizer.json", &b, &err), "the embedded tokenizer inflates");
	ok(b.len == 11422654, "tokenizer.json has its original size (%zu)", b.len);
	ok(!gm_json_parse(b.buf, b.len, "tokenizer.json", &o, &err) &&
	   json_object_object_get_ex(o, "model", &model) && json_object_object_get_ex(model, "vocab", &vocab) &&
	   json_object_object_length(vocab) == 151643, "it is the Qwen3 BPE (151643 vocab entries)");
	json_object_put(o);
	gm_buf_reset(&b);
	ok(!gm_asset_read("qwen3/tokenizer_config.json", &b, &err) && strstr(b.buf, "chat_template"),
	   "the tokenizer config carries the chat template");
	gm_buf_reset(&b);
	ok(!gm_asset_read("qwen3/LICENSE", &b, &err) && strstr(b.buf, "License"), "its license is embedded");
	ok_error(gm_asset_read("nope", &b, &err), &err, GM_ENOENT, "no embedded asset named 'nope'",
		 "unknown assets are refused");
	gm_buf_release(&b);
}

/* ---------------------------------------------------------------- thread pool */

struct pool_job {
	int *count;     /* [n]: times each item was visited */
	int64_t grain;
	int size, bad;  /* bad: a chunk misaligned, or a thread id out of range */
	int slow;       /* items whose visit sleeps, so that loops overlap a worker's lateness */
};

static void pool_visit(void *ctx, int64_t b, int64_t e, int thread)
{
	struct pool_job *j = ctx;
	int64_t i;

	if (thread < 0 || thread >= j->size || b % j->grain)
		__atomic_store_n(&j->bad, 1, __ATOMIC_RELAXED);
	for (i = b; i < e; i++) {
		j->count[i]++;
		if (j->slow && i == b && (b / j->grain) % 7 == 3) {
			struct timespec ts = { 0, 20000 };
			nanosleep(&ts, NULL);
		}
	}
}

static atomic_int hog_stop;

static void *hog(void *arg)
{
	volatile unsigned long x = 0;

	(void)arg;
	while (!atomic_load_explicit(&hog_stop, memory_order_relaxed))
		x++;
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Every item visited exactly once per loop, in chunks that are multiples
 * of the grain, by thread ids in range: with more threads than CPUs and
 * with busy threads of our own competing for every CPU (a descheduled
 * worker must not stall loops, or lose one), over thousands of loops as a
 * decode makes them.
 */
static void test_threadpool(void)
{
	static const int sizes[] = { 1, 2, 3, 8 };
	int n_cpu = gm_cpu_count(), h, si;
	pthread_t hogs[4];
	gm_error err = GM_ERROR_INIT;

	for (h = 0; h < 2; h++) {
		int n_hogs = h ? (n_cpu < 4 ? n_cpu : 4) : 0;
		atomic_store(&hog_stop, 0);
		for (si = 0; si < n_hogs; si++)
			pthread_create(&hogs[si], NULL, hog, NULL);
		for (si = 0; si < 4; si++) {
			gm_threadpool *p = NULL;
			const int64_t n = 3000;
			int loops = 2000, l, ok_all = 1;
			struct pool_job j = { gm_xcalloc(n, sizeof(int)), 16, sizes[si], 0, 0 };
			double t0 = now_s();
			int64_t i;

			if (gm_threadpool_new(sizes[si], &p, &err)) {
				ok(0, "gm_threadpool_new(%d): %s", sizes[si], err.msg);
				free(j.count);
				continue;
			}
			for (l = 0; l < loops; l++) {
				j.slow = l % 50 == 0;
				gm_threadpool_for(p, l % 3 ? n : 17 + l % 200, j.grain, pool_visit, &j);
				if (l % 3 == 0) {
					for (i = 0; i < 17 + l % 200; i++)
						ok_all &= j.count[i] == 1;
					memset(j.count, 0, n * sizeof(int));
				} else {
					for (i = 0; i < n; i++)
						ok_all &= j.count[i] == 1;
					memset(j.count, 0, n * sizeof(int));
				}
			}
			ok(ok_all && !j.bad && gm_threadpool_size(p) == sizes[si],
			   "thread pool of %d (%d CPUs, %d busy threads beside): %d loops, every item once (%.2f s)",
			   sizes[si], n_cpu, n_hogs, loops, now_s() - t0);
			gm_threadpool_free(p);
			free(j.count);
		}
		atomic_store(&hog_stop, 1);
		for (si = 0; si < n_hogs; si++)
			pthread_join(hogs[si], NULL);
	}
}

int main(void)
{
	char *cmd;

	snprintf(tmpdir, sizeof(tmpdir), "%s/gm-test-util-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! cannot create a temporary directory\n");
		return 1;
	}
	test_error();
	test_buf();
	test_fs();
	test_json();
	test_json_double();
	test_dtype_mix();
	test_opts();
	test_rng();
	test_assets();
	test_threadpool();
	cmd = gm_path_join("rm -rf ", tmpdir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", tmpdir);
	free(cmd);
	return tap_done();
}
