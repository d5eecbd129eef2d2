/*
 * git model quantize - a model as GGUF files, one per type, that llama.cpp
 * loads as they are (formats/gguf-export.h), committed to the model's
 * repository as LFS objects in one commit.
 *
 * Crash safety (t/t9000-crash.sh, t/t9001-full-disk.sh): every file is
 * written under a temporary name (base/fs.h) and renamed only when all of
 * them and their LFS objects are stored (gm_repo_commit_atomic), so a full
 * disk changes nothing and a kill leaves no partial file under a final
 * name; a run again removes the temporaries a killed run left, and makes no
 * second commit when the first one was made.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "base/log.h"
#include "builtin.h"
#include "formats/gguf-export.h"
#include "formats/model.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "storage/resolve.h"

static const char *const usage[] = {
	"git model quantize --type <type> [--type <type>...] (<name> | <dir>)",
	"git model quantize --type <type> -o <file.gguf> (<name> | <dir>)",
	NULL
};

/* The last path component of dir, trailing slashes ignored (malloc'ed). */
static char *base_name(const char *dir)
{
	char *d = gm_xstrdup(dir), *slash;
	size_t n = strlen(d);

	while (n > 1 && d[n - 1] == '/')
		d[--n] = 0;
	slash = strrchr(d, '/');
	if (slash) {
		char *b = gm_xstrdup(slash + 1);
		free(d);
		return b;
	}
	return d;
}

static unsigned long long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (unsigned long long)st.st_size;
}

/* Removes what a killed run writing path left (its temporaries). */
static void remove_stale(const char *path)
{
	int n = gm_atomic_remove_stale(path);

	if (n)
		gm_info("removed %d temporary file%s of %s left by an interrupted run", n, n == 1 ? "" : "s", path);
}

int cmd_quantize(int argc, const char **argv)
{
	gm_strlist types = { NULL, 0, 0 };
	const char *out = NULL;
	int verbosity = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_STRING_LIST(0, "type", &types, "type",
				   "Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q5_1, Q5_0, Q4_1, Q4_0, BF16, F16 or "
				   "F32 (repeatable)"),
		GM_OPT_STRING('o', "output", &out, "file", "write this file instead (one --type; no commit)"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model quantize", "git-model", usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_registry *reg = NULL;
	gm_registry_model entry = { 0 };
	gm_repo *r = NULL;
	gm_model *m = NULL;
	gm_atomic_file *files = NULL;
	char *dir = NULL, *name = NULL, commit[GM_REPO_OID_HEXLEN + 1] = "", head[GM_REPO_OID_HEXLEN + 1];
	gm_buf msg = GM_BUF_INIT, wrote = GM_BUF_INIT;
	size_t i, opened = 0;
	int found = 0, made = 0;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n != 1) {
		status = gm_cmd_usage_error(&cmd, n ? "one model expected" : "missing <name> or <dir>: the model to quantize");
		goto done;
	}
	if (!types.n) {
		status = gm_cmd_usage_error(&cmd, "missing --type (%s)", gm_gguf_export_types());
		goto done;
	}
	for (i = 0; i < types.n; i++)
		if (!gm_gguf_export_type_known(types.items[i])) {
			status = gm_cmd_usage_error(&cmd, "unknown --type '%s' (known: %s)", types.items[i],
						    gm_gguf_export_types());
			goto done;
		}
	if (out && types.n != 1) {
		status = gm_cmd_usage_error(&cmd, "-o writes one file: give one --type");
		goto done;
	}
	gm_cmd_set_verbosity(verbosity);
	if (gm_repo_resolve_model(argv[0], &dir, &err) || gm_model_open_mode(dir, GM_WEIGHTS_MMAP, &m, &err)) {
		status = gm_cmd_error(&err);
		goto done;
	}
	if (out) {
		remove_stale(out);
		if (gm_gguf_export(m, types.items[0], out, &err)) {
			status = gm_cmd_error(&err);
			goto done;
		}
		if (verbosity >= 0)
			printf("wrote %s (%s, %llu bytes)\n", out, types.items[0], file_size(out));
		status = 0;
		goto done;
	}
	/* into the model's repository: a registered model (or a directory one is registered at) */
	if (gm_registry_open(NULL, &reg, &err) == 0) {
		char *real = realpath(dir, NULL);
		if (real)
			gm_registry_find_by_path(reg, real, &entry, &found, &err);
		free(real);
	}
	if (!found) {
		status = gm_cmd_usage_error(&cmd, "%s is not a registered model's work tree: give -o FILE to write "
					    "a file, or register it (git model import)", dir);
		goto done;
	}
	if (gm_repo_open(entry.path, &r, &err) || gm_repo_resolve(r, NULL, head, &err)) {
		status = gm_cmd_error(&err);
		goto done;
	}
	name = base_name(entry.name);
	files = gm_xcalloc(types.n, sizeof(*files));
	gm_buf_addf(&msg, "quantize %.12s to", head);
	/* every file under a temporary name first: a failure leaves none */
	for (i = 0; i < types.n; i++) {
		gm_buf file = GM_BUF_INIT, size = GM_BUF_INIT;
		char *path;

		gm_buf_addf(&file, "%s-%s.gguf", name, types.items[i]);
		path = gm_path_join(entry.path, file.buf);
		remove_stale(path);
		if (gm_atomic_open(&files[i], path, 0644, &err) ||
		    (++opened, gm_gguf_export_to(m, types.items[i], &files[i], &err))) {
			gm_error_prefix(&err, "%s", file.buf);
			free(path);
			gm_buf_release(&file);
			status = gm_cmd_error(&err);
			goto done;
		}
		gm_buf_add_human_bytes(&size, files[i].written);
		gm_buf_addf(&msg, "%s %s (%s)", i ? "," : "", types.items[i], size.buf);
		gm_buf_addf(&wrote, "wrote %s (%s, %s)\n", file.buf, types.items[i], size.buf);
		free(path);
		gm_buf_release(&size);
		gm_buf_release(&file);
	}
	gm_buf_addf(&msg, "\n\nGGUF files written by git model quantize from %s.\n", head);
	/* stored, renamed into place and committed: the files are r's now */
	opened = 0;
	if (gm_repo_commit_atomic(r, files, types.n, msg.buf, commit, &made, &err)) {
		status = gm_cmd_error(&err);
		goto done;
	}
	gm_registry_set_revision(reg, entry.name, commit, NULL);
	if (verbosity >= 0) {
		fputs(wrote.buf ? wrote.buf : "", stdout);
		if (made)
			printf("committed %.12s in %s\n", commit, entry.name);
		else
			printf("already committed in %.12s of %s (nothing to commit)\n", commit, entry.name);
	}
	status = 0;
done:
	for (i = 0; i < opened; i++)
		gm_atomic_abort(&files[i]);
	free(files);
	gm_buf_release(&wrote);
	free(name);
	gm_buf_release(&msg);
	gm_model_close(m);
	gm_repo_close(r);
	gm_registry_model_release(&entry);
	gm_registry_close(reg);
	free(dir);
	gm_strlist_clear(&types);
	return status;
}
