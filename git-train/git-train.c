/*
 * git-train - fine-tune a model with LoRA.
 *
 * Training itself arrives with the LoRA trainer; for now the command checks
 * training data files (libcore/traindata.h) so that bad lines are found
 * before a run, not in the middle of one.
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "cmd.h"
#include "traindata.h"

#define MAX_REPORTED_ERRORS 100

static const char *const usage[] = {
	"git train --check-data <file> [--json]",
	NULL
};

struct error_list {
	const char *name;
	json_object *messages; /* --json: the reported messages; else NULL */
};

static void report_error(void *ctx, const gm_error *line_error)
{
	struct error_list *l = ctx;

	fprintf(stderr, "%s\n", line_error->msg);
	if (l->messages)
		json_object_array_add(l->messages, json_object_new_string(line_error->msg));
}

static void print_json(const char *name, const gm_td_stats *st, json_object *messages, int ok)
{
	json_object *o = json_object_new_object(), *counts = json_object_new_object();
	int k;

	json_object_object_add(o, "file", json_object_new_string(name));
	json_object_object_add(o, "valid", json_object_new_boolean(ok));
	json_object_object_add(o, "lines", json_object_new_int64((int64_t)st->lines));
	json_object_object_add(o, "examples", json_object_new_int64((int64_t)st->examples));
	for (k = 0; k < GM_TD_KIND_COUNT; k++)
		json_object_object_add(counts, gm_td_kind_key((enum gm_td_kind)k),
				       json_object_new_int64((int64_t)st->count[k]));
	json_object_object_add(o, "counts", counts);
	json_object_object_add(o, "errors", json_object_new_int64((int64_t)st->errors));
	json_object_object_add(o, "error_messages", json_object_get(messages));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void print_summary(const char *name, const gm_td_stats *st)
{
	printf("%s: %lu example%s (text: %lu, messages: %lu, prompt/completion: %lu, token ids: %lu)\n",
	       name, st->examples, st->examples == 1 ? "" : "s", st->count[GM_TD_TEXT],
	       st->count[GM_TD_MESSAGES], st->count[GM_TD_PROMPT_COMPLETION], st->count[GM_TD_TOKENS]);
}

static int check_data(const char *path, int json, int verbosity)
{
	const char *name = strcmp(path, "-") ? path : "<stdin>";
	struct error_list list = { name, json ? json_object_new_array() : NULL };
	gm_error err = GM_ERROR_INIT;
	gm_td_stats st;
	int ret, status = 0;

	ret = gm_td_check(path, MAX_REPORTED_ERRORS, &st, report_error, &list, &err);
	if (ret && ret != GM_EFORMAT) { /* could not open or read the file */
		json_object_put(list.messages);
		return gm_cmd_error(&err);
	}
	if (json)
		print_json(name, &st, list.messages, !ret);
	else if (!ret && verbosity >= 0)
		print_summary(name, &st);
	if (ret) {
		if (st.errors > MAX_REPORTED_ERRORS)
			fprintf(stderr, "%s: %lu more invalid lines not shown\n", name,
				st.errors - MAX_REPORTED_ERRORS);
		if (st.errors)
			gm_error_set(&err, GM_EFORMAT, "%s: %lu invalid line%s (%lu valid example%s)", name,
				     st.errors, st.errors == 1 ? "" : "s", st.examples,
				     st.examples == 1 ? "" : "s");
		status = gm_cmd_error(&err);
	}
	json_object_put(list.messages);
	return status;
}

int main(int argc, const char **argv)
{
	const char *data = NULL;
	int json = 0, verbosity = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_STRING(0, "check-data", &data, "FILE",
			      "validate a JSONL training data file ('-' for standard input)"),
		GM_OPT_FLAG(0, "json", &json, "print the result as JSON"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git train", "git-train", usage, options };

	n = gm_cmd_parse(&cmd, argc, argv, 0, 1, &status);
	if (n < 0)
		return status;
	gm_cmd_set_verbosity(verbosity);
	if (n > 0)
		return gm_cmd_usage_error(&cmd, "unexpected argument '%s'", argv[0]);
	if (!data)
		return gm_cmd_usage_error(&cmd, "nothing to do: training is not available yet; "
					  "use --check-data FILE to validate a data file");
	return check_data(data, json, verbosity);
}
