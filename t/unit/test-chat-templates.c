/*
 * test-chat-templates.c - the chat templates of released instruct models
 * (t/fixtures/chat-templates/NAME.jinja), each rendered with every
 * conversation of conversations.json, generation prompt off and on, must
 * give byte for byte what jinja2 gives with transformers' environment
 * (golden/NAME.jsonl, made by t/chat-templates/render-jinja2.py); where
 * jinja2 raises, rendering must fail too, with the template's own message
 * when it called raise_exception().
 *
 * GM_CHAT_TEMPLATES_VERBOSE=1 shows every mismatch, not only the first of
 * each template.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/json.h"
#include "text/chat.h"
#include "text/jinja.h"
#include "tap.h"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static json_object *find_conv(json_object *convs, const char *name)
{
	size_t i;

	for (i = 0; i < json_object_array_length(convs); i++) {
		json_object *c = json_object_array_get_idx(convs, i), *n;

		if (json_object_object_get_ex(c, "name", &n) && !strcmp(json_object_get_string(n), name))
			return c;
	}
	return NULL;
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

/* 160 bytes of s with newlines as \n, for the diagnostic. */
static void show_escaped(const char *label, const char *s)
{
	char buf[400];
	size_t i, k = 0;

	for (i = 0; s[i] && i < 160; i++) {
		if (s[i] == '\n') {
			buf[k++] = '\\';
			buf[k++] = 'n';
		} else {
			buf[k++] = s[i];
		}
	}
	buf[k] = '\0';
	tap_diag("%s ...%s", label, buf);
}

/* Where a and b first differ, for the diagnostic. */
static void show_diff(const char *want, const char *got)
{
	size_t i = 0, from;

	while (want[i] && want[i] == got[i])
		i++;
	from = i > 20 ? i - 20 : 0;
	tap_diag("first difference at byte %zu", i);
	show_escaped("want", want + from);
	show_escaped("got ", got + from);
}

static void test_template(const char *dir, const char *file, json_object *spec, int verbose, int *n_ok,
			  int *n_all)
{
	char *path = gm_path_join(dir, file), *gpath, *line, *next;
	char name[256];
	json_object *convs, *vars, *tools;
	gm_buf src = GM_BUF_INIT, golden = GM_BUF_INIT;
	gm_chat_template *t = NULL;
	gm_error err = GM_ERROR_INIT;
	int renders = 0, good = 0, shown = 0;

	snprintf(name, sizeof(name), "golden/%.*s.jsonl", (int)(strlen(file) - 6), file);
	gpath = gm_path_join(dir, name);
	json_object_object_get_ex(spec, "conversations", &convs);
	json_object_object_get_ex(spec, "variables", &vars);
	json_object_object_get_ex(spec, "tools", &tools);
	if (gm_read_file(path, &src, &err) || gm_read_file(gpath, &golden, &err) ||
	    gm_chat_template_parse(src.buf, src.len, file, get_str(vars, "bos_token"), get_str(vars, "eos_token"), &t,
				   &err)) {
		ok(0, "%s: parse (%s)", file, err.msg);
		goto out;
	}
	for (line = golden.buf; *line; line = next) {
		json_object *rec = NULL, *conv, *v;
		const char *want, *werr;
		gm_chat_render_opts o;
		gm_buf got = GM_BUF_INIT;
		int ret, pass;

		next = strchr(line, '\n');
		next = next ? next + 1 : line + strlen(line);
		if (next - line < 2)
			continue;
		if (gm_json_parse(line, (size_t)(next - line), gpath, &rec, &err) ||
		    !(conv = find_conv(convs, get_str(rec, "conversation")))) {
			ok(0, "%s: golden line (%s)", file, err.msg);
			json_object_put(rec);
			break;
		}
		gm_chat_render_opts_init(&o);
		json_object_object_get_ex(conv, "messages", &o.messages);
		if (json_object_object_get_ex(conv, "tools", &v) && json_object_get_boolean(v))
			o.tools = tools;
		json_object_object_get_ex(rec, "add_generation_prompt", &v);
		o.add_generation_prompt = json_object_get_boolean(v);
		if (json_object_object_get_ex(conv, "enable_thinking", &v))
			o.enable_thinking = json_object_get_boolean(v) ? GM_CHAT_THINKING_ON : GM_CHAT_THINKING_OFF;
		want = get_str(rec, "output");
		werr = get_str(rec, "error");
		gm_error_clear(&err);
		ret = gm_chat_render_ex(t, &o, &got, &err);
		if (want)
			pass = !ret && got.len == strlen(want) && !memcmp(got.buf, want, got.len);
		else
			pass = ret && (!json_object_object_get_ex(rec, "raised", &v) || !json_object_get_boolean(v) ||
				       strstr(err.msg, werr));
		renders++;
		good += pass;
		if (!pass && (verbose || !shown)) {
			shown = 1;
			tap_diag("%s, %s, add_generation_prompt %d:", file, get_str(rec, "conversation"),
				 o.add_generation_prompt);
			if (want && !ret)
				show_diff(want, got.buf ? got.buf : "");
			else if (want)
				tap_diag("failed: %s", err.msg);
			else
				tap_diag("jinja2 raised \"%s\"; we %s", werr, ret ? err.msg : "rendered");
		}
		gm_buf_release(&got);
		json_object_put(rec);
	}
	ok(renders && good == renders, "%s: %d of %d renders identical to jinja2", file, good, renders);
	*n_ok += good;
	*n_all += renders;
out:
	gm_chat_template_free(t);
	gm_buf_release(&src);
	gm_buf_release(&golden);
	free(path);
	free(gpath);
}

/* snippets.json: one small template per construct, against golden/snippets.jsonl. */
static void test_snippets(const char *dir)
{
	char *spath = gm_path_join(dir, "snippets.json"), *gpath = gm_path_join(dir, "golden/snippets.jsonl");
	gm_error err = GM_ERROR_INIT;
	json_object *spec = NULL, *golden = NULL, *snips, *contexts;
	gm_buf gbuf = GM_BUF_INIT;
	char *line, *next;
	size_t i = 0;

	if (!ok(!gm_json_parse_file(spath, &spec, &err) && !gm_read_file(gpath, &gbuf, &err), "read the snippets (%s)",
		err.msg))
		goto out;
	json_object_object_get_ex(spec, "snippets", &snips);
	json_object_object_get_ex(spec, "contexts", &contexts);
	for (line = gbuf.buf; *line; line = next, i++) {
		json_object *rec = NULL, *sn = json_object_array_get_idx(snips, i), *cname, *ctx = NULL, *v;
		const char *name = get_str(sn, "name"), *tmpl = get_str(sn, "template"), *want, *werr;
		gm_jinja_template *t = NULL;
		gm_buf got = GM_BUF_INIT;
		int ret;

		next = strchr(line, '\n');
		next = next ? next + 1 : line + strlen(line);
		if (gm_json_parse(line, (size_t)(next - line), gpath, &rec, &err) || !name ||
		    strcmp(name, get_str(rec, "name"))) {
			ok(0, "snippet %zu matches its golden line (%s)", i, err.msg);
			json_object_put(rec);
			break;
		}
		if (json_object_object_get_ex(sn, "context", &cname))
			json_object_object_get_ex(contexts, json_object_get_string(cname), &ctx);
		want = get_str(rec, "output");
		werr = get_str(rec, "error");
		gm_error_clear(&err);
		ret = gm_jinja_parse(tmpl, strlen(tmpl), name, &t, &err);
		if (!ret)
			ret = gm_jinja_render(t, ctx, &got, &err);
		if (want) {
			if (!ok(!ret && got.len == strlen(want) && !memcmp(got.buf, want, got.len),
				"snippet %s renders as jinja2 (%s)", name, err.msg) && !ret)
				show_diff(want, got.buf);
		} else {
			int raised = json_object_object_get_ex(rec, "raised", &v) && json_object_get_boolean(v);

			ok(ret && (!raised || strstr(err.msg, werr)), "snippet %s fails as in jinja2 (%s / %s)", name,
			   werr, ret ? err.msg : got.buf);
		}
		gm_jinja_free(t);
		gm_buf_release(&got);
		json_object_put(rec);
	}
	ok(i == json_object_array_length(snips), "every snippet has a golden line");
out:
	json_object_put(spec);
	json_object_put(golden);
	gm_buf_release(&gbuf);
	free(spath);
	free(gpath);
}

int main(void)
{
	char *dir = gm_path_join(tap_srcdir(), "t/fixtures/chat-templates");
	char *cpath = gm_path_join(dir, "conversations.json");
	const char *verbose = getenv("GM_CHAT_TEMPLATES_VERBOSE");
	gm_error err = GM_ERROR_INIT;
	json_object *spec = NULL;
	char **files = NULL;
	size_t n = 0, i;
	int n_ok = 0, n_all = 0;
	DIR *d;
	struct dirent *de;

	/* The goldens were rendered at this instant (strftime_now). */
	setenv("GM_JINJA_NOW", "1785067200", 1);
	if (!ok(!gm_json_parse_file(cpath, &spec, &err), "read conversations.json (%s)", err.msg))
		return tap_done();
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len > 6 && !strcmp(de->d_name + len - 6, ".jinja")) {
			files = realloc(files, (n + 1) * sizeof(*files));
			files[n++] = strdup(de->d_name);
		}
	}
	if (d)
		closedir(d);
	ok(n >= 60, "the corpus has %zu templates", n);
	qsort(files, n, sizeof(*files), cmp_str);
	for (i = 0; i < n; i++) {
		test_template(dir, files[i], spec, verbose && *verbose == '1', &n_ok, &n_all);
		free(files[i]);
	}
	tap_diag("%d of %d renders identical", n_ok, n_all);
	test_snippets(dir);
	free(files);
	json_object_put(spec);
	free(cpath);
	free(dir);
	return tap_done();
}
