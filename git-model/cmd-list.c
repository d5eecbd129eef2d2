/*
 * git model list / rm - the registered models.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "storage/resolve.h"

static const char *const list_usage[] = {
	"git model list [--json]",
	NULL
};
static const char *const rm_usage[] = {
	"git model rm [--yes] <name>",
	NULL
};

/* The live state of a model: its HEAD commit and size (the registry's
 * revision is what was last recorded; the repository may have moved). */
struct model_state {
	char revision[GM_REPO_OID_HEXLEN + 1];
	unsigned long long size;
	int missing;
};

static void model_state(const gm_registry_model *m, struct model_state *st)
{
	gm_repo *r;

	memset(st, 0, sizeof(*st));
	if (!gm_is_dir(m->path)) {
		st->missing = 1;
		snprintf(st->revision, sizeof(st->revision), "%s", m->revision);
		return;
	}
	if (gm_repo_open(m->path, &r, NULL) == 0) {
		if (gm_repo_resolve(r, NULL, st->revision, NULL))
			snprintf(st->revision, sizeof(st->revision), "%s", m->revision);
		gm_repo_close(r);
	}
	st->size = gm_repo_disk_usage(m->path);
}

int cmd_list(int argc, const char **argv)
{
	int json = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_FLAG(0, "json", &json, "print a JSON list of objects"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model list", "git-model", list_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_registry *reg;
	gm_registry_model *v;
	size_t i, count;
	json_object *arr;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n > 0)
		return gm_cmd_usage_error(&cmd, "unexpected argument '%s'", argv[0]);
	if (gm_registry_open(NULL, &reg, &err) || gm_registry_list_models(reg, &v, &count, &err)) {
		status = gm_cmd_error(&err);
		gm_registry_close(reg);
		return status;
	}
	arr = json_object_new_array();
	for (i = 0; i < count; i++) {
		struct model_state st;
		model_state(&v[i], &st);
		if (json) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "name", json_object_new_string(v[i].name));
			json_object_object_add(o, "path", json_object_new_string(v[i].path));
			json_object_object_add(o, "revision", json_object_new_string(st.revision));
			json_object_object_add(o, "source", json_object_new_string(v[i].source));
			json_object_object_add(o, "size", json_object_new_int64((int64_t)st.size));
			json_object_object_add(o, "added", json_object_new_int64(v[i].added));
			json_object_object_add(o, "missing", json_object_new_boolean(st.missing));
			json_object_array_add(arr, o);
		} else {
			gm_buf size = GM_BUF_INIT;
			gm_buf_add_human_bytes(&size, st.size);
			printf("%-24s %-12.12s %10s  %s%s  %s\n", v[i].name, st.revision[0] ? st.revision : "-",
			       st.missing ? "-" : size.buf, v[i].path, st.missing ? " (missing)" : "",
			       v[i].source[0] ? v[i].source : "-");
			gm_buf_release(&size);
		}
	}
	if (json)
		puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(arr);
	gm_registry_models_free(v, count);
	gm_registry_close(reg);
	return 0;
}

int cmd_rm(int argc, const char **argv)
{
	int yes = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_FLAG('y', "yes", &yes, "do not ask for confirmation"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model rm", "git-model", rm_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_registry *reg = NULL;
	gm_registry_model m = { 0 };

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1)
		return gm_cmd_usage_error(&cmd, n ? "one <name> expected" : "missing <name>: the model to remove");
	if (gm_registry_open(NULL, &reg, &err) || gm_registry_get_model(reg, argv[0], &m, &err)) {
		gm_registry_close(reg);
		return gm_cmd_error(&err);
	}
	gm_registry_close(reg);
	if (!yes) {
		char line[64];
		gm_buf size = GM_BUF_INIT;
		if (!isatty(0)) {
			gm_error_set(&err, GM_EINVAL, "not removing model '%s' without confirmation: "
				     "standard input is not a terminal (use --yes)", argv[0]);
			gm_registry_model_release(&m);
			return gm_cmd_error(&err);
		}
		gm_buf_add_human_bytes(&size, gm_repo_disk_usage(m.path));
		fprintf(stderr, "Remove model '%s' and delete %s (%s)? [y/N] ", m.name, m.path, size.buf);
		fflush(stderr);
		gm_buf_release(&size);
		if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y')) {
			fprintf(stderr, "not removed\n");
			gm_registry_model_release(&m);
			return 1;
		}
	}
	gm_registry_model_release(&m);
	if (gm_repo_remove(argv[0], &err))
		return gm_cmd_error(&err);
	printf("removed '%s'\n", argv[0]);
	return 0;
}
