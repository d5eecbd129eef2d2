/*
 * fuzz-traindata.c - libFuzzer target for training data files (JSONL,
 * libcore/train/traindata.c), which `git train` and `git train
 * --check-data` read from users and from datasets downloaded anywhere.
 *
 * Each input is written to a file and read line by line with gm_td_next,
 * then checked as a whole with gm_td_check.  Invariants: every bad line's
 * message starts with "FILE:LINE: " and a reason, with LINE the reader's
 * line; every example has the fields its kind promises (non-empty text,
 * at least one assistant turn, ids >= 0, a loss mask of 0s and 1s that is
 * not all 0, valid UTF-8 strings); line numbers only grow; gm_td_check
 * counts the same examples and bad lines as the loop.  The file is read
 * once more with a 64-byte line limit, so that the "too long" path runs.
 */
#include "train/traindata.h"
#include "fuzz-common.h"

static char path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(path, sizeof(path), "%s/train.jsonl", fuzz_scratch_dir("td"));
	return 0;
}

/* "PATH:LINE: reason" with LINE == line. */
static void check_line_error(const gm_error *e, unsigned long line)
{
	char prefix[400];
	int n = snprintf(prefix, sizeof(prefix), "%s:%lu: ", path, line);

	if (e->code != GM_EFORMAT || strncmp(e->msg, prefix, (size_t)n) || !e->msg[n]) {
		fprintf(stderr, "line error without 'FILE:%lu: reason': code %d, '%s'\n", line, e->code, e->msg);
		abort();
	}
}

static void check_example(const gm_td_example *ex)
{
	size_t i, ones = 0, assistant = 0;

	switch (ex->kind) {
	case GM_TD_TEXT:
		CHECK(ex->text && ex->text_len > 0);
		CHECK(fuzz_utf8_valid((const uint8_t *)ex->text, ex->text_len));
		break;
	case GM_TD_MESSAGES:
		CHECK(ex->messages && ex->n_messages > 0);
		for (i = 0; i < ex->n_messages; i++) {
			const struct gm_td_message *m = &ex->messages[i];
			CHECK(m->role <= GM_TD_ROLE_TOOL && m->content);
			CHECK(fuzz_utf8_valid((const uint8_t *)m->content, m->content_len));
			assistant += m->role == GM_TD_ROLE_ASSISTANT;
		}
		CHECK(assistant > 0);
		break;
	case GM_TD_PROMPT_COMPLETION:
		CHECK(ex->prompt && ex->completion && ex->completion_len > 0);
		CHECK(fuzz_utf8_valid((const uint8_t *)ex->prompt, ex->prompt_len));
		CHECK(fuzz_utf8_valid((const uint8_t *)ex->completion, ex->completion_len));
		break;
	case GM_TD_TOKENS:
		CHECK(ex->input_ids && ex->n_tokens > 0);
		for (i = 0; i < ex->n_tokens; i++) {
			CHECK(ex->input_ids[i] >= 0);
			if (ex->loss_mask) {
				CHECK(ex->loss_mask[i] <= 1);
				ones += ex->loss_mask[i];
			}
		}
		CHECK(!ex->loss_mask || ones > 0);
		break;
	default:
		CHECK(!"unknown kind");
	}
}

static void read_all(size_t max_line, unsigned long *examples, unsigned long *errors, unsigned long n_lines)
{
	gm_td_reader *r = NULL;
	gm_td_example ex;
	gm_error err = GM_ERROR_INIT;
	unsigned long last = 0;
	int ret;

	CHECK(!gm_td_open(path, max_line, &r, &err));
	*examples = *errors = 0;
	while ((ret = gm_td_next(r, &ex, &err)) != 0) {
		if (ret == 1) {
			CHECK(ex.line > last && ex.line <= n_lines);
			last = ex.line;
			check_example(&ex);
			++*examples;
		} else {
			unsigned long line;

			/* The only error a file we wrote can give is a bad line. */
			CHECK(ret == GM_EFORMAT);
			CHECK(!strncmp(err.msg, path, strlen(path)) && err.msg[strlen(path)] == ':');
			line = strtoul(err.msg + strlen(path) + 1, NULL, 10);
			check_line_error(&err, line);
			CHECK(line > last && line <= n_lines);
			last = line;
			++*errors;
			CHECK(*errors <= n_lines);
		}
		gm_error_clear(&err);
	}
	gm_td_close(r);
}

static void count_line_error(void *ctx, const gm_error *e)
{
	(void)e;
	++*(unsigned long *)ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gm_td_stats st;
	gm_error err = GM_ERROR_INIT;
	unsigned long n_lines = 0, examples, errors, reported = 0, ex64, err64;
	size_t i;
	int ret;

	for (i = 0; i < size; i++)
		n_lines += data[i] == '\n';
	if (size && data[size - 1] != '\n')
		n_lines++;
	fuzz_write_file(path, data, size);
	read_all(0, &examples, &errors, n_lines);

	ret = gm_td_check(path, 0, &st, count_line_error, &reported, &err);
	CHECK(st.examples == examples && st.errors == errors && reported == errors);
	CHECK(st.lines == n_lines);
	CHECK(st.count[GM_TD_TEXT] + st.count[GM_TD_MESSAGES] + st.count[GM_TD_PROMPT_COMPLETION] +
	      st.count[GM_TD_TOKENS] == examples);
	if (errors) {
		if (fuzz_verbose())
			fprintf(stderr, "refused: %s\n", err.msg);
		CHECK(ret == GM_EFORMAT);
		/* the first bad line: its number is in the message */
		CHECK(err.msg[0] && !strncmp(err.msg, path, strlen(path)) && err.msg[strlen(path)] == ':');
		check_line_error(&err, strtoul(err.msg + strlen(path) + 1, NULL, 10));
	} else if (!examples) {
		CHECK_REFUSAL(ret, err);
	} else {
		CHECK(ret == 0);
		fuzz_accepted("training data");
	}

	/* A short line limit: the long lines become errors, nothing else changes for the others. */
	read_all(64, &ex64, &err64, n_lines);
	CHECK(ex64 <= examples && ex64 + err64 <= n_lines);
	return 0;
}
