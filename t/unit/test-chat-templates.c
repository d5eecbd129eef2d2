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
#include <time.h>

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

/* Renders src with limits lim; the error (if any) in err. */
static int render_limited(const char *src, const gm_jinja_limits *lim, gm_buf *out, gm_error *err)
{
	gm_jinja_template *t = NULL;
	int ret;

	gm_buf_reset(out);
	gm_error_clear(err);
	ret = gm_jinja_parse(src, strlen(src), "t", &t, err);
	if (!ret)
		ret = gm_jinja_render_ex(t, NULL, lim, out, err);
	gm_jinja_free(t);
	return ret;
}

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time: what the render costs, however busy the machine keeps the process waiting */
static double cpu_s(void)
{
	return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* Each resource limit (issue 16) fails with an error naming it; the defaults stop the doubling template fast. */
static void test_limits(void)
{
	static const char doubling[] = "{% set ns = namespace(s=\"x\") %}{% for i in range(40) %}"
				       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
	gm_error err = GM_ERROR_INIT;
	gm_buf out = GM_BUF_INIT;
	gm_jinja_limits lim;
	double t0;
	int ret;

	gm_jinja_limits_init(&lim);
	ok(lim.max_output == 16u << 20 && lim.max_string == 8u << 20 && lim.max_list == 100000 &&
	   lim.max_iterations == 10000000 && lim.max_call_depth == 100 && lim.max_seconds == 10,
	   "default limits: 16 MiB output, 8 MiB strings, 100k items, 10M steps, 100 calls, 10 s");
	t0 = cpu_s();
	ret = render_limited(doubling, NULL, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "t: line 1: string longer than the 8 MiB limit",
		 "the doubling template of issue 16 fails on the string limit");
	ok(cpu_s() - t0 < 1.0, "... in %.3f s of CPU time", cpu_s() - t0);
	ok(out.len == 0, "... and prints nothing");

	gm_jinja_limits_init(&lim);
	lim.max_string = 1024;
	ret = render_limited("\n{{ 'ab' * 600 }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "line 2: string longer than the 1 KiB limit", "string repetition");
	ret = render_limited("{{ 'x' * 1000 ~ 'y' * 100 }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "string longer than the 1 KiB limit", "concatenation with ~");
	ret = render_limited("{{ ('x' * 1000) + ('y' * 100) }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "string longer than the 1 KiB limit", "concatenation with +");
	ret = render_limited("{{ ('x' * 100).replace('x', 'yyyyyyyyyyyy') }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "string longer than the 1 KiB limit", "replace()");
	{
		gm_jinja_template *t = NULL;
		json_object *ctx = json_object_new_object();
		static const char src[] = "{{ content }}{{ content | length }}";
		char big[2001];

		memset(big, 'b', 2000);
		big[2000] = '\0';
		json_object_object_add(ctx, "content", json_object_new_string(big));
		gm_buf_reset(&out);
		ret = gm_jinja_parse(src, sizeof(src) - 1, "t", &t, &err);
		if (!ret)
			ret = gm_jinja_render_ex(t, ctx, &lim, &out, &err);
		ok(!ret && out.len == 2004, "strings passed in are not held to the string limit (%s)", err.msg);
		gm_jinja_free(t);
		json_object_put(ctx);
	}
	ret = render_limited("{{ range(300) | join(', ') }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "string longer than the 1 KiB limit", "join");
	ret = render_limited("{% set s %}{% for i in range(300) %}abcd{% endfor %}{% endset %}{{ s | length }}", &lim,
			     &out, &err);
	ok(!ret && !strcmp(out.buf, "1200"), "a block set is held to the output limit, not the string limit (%s)",
	   err.msg);
	ret = render_limited("{{ ('x\\n' * 400) | indent(4, true) }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "string longer than the 1 KiB limit", "indent");

	gm_jinja_limits_init(&lim);
	lim.max_output = 1000;
	ret = render_limited("{% for i in range(200) %}xxxxxxxxxx{% endfor %}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "t: line 1: output longer than the 1000-byte limit", "template text");
	ret = render_limited("{% for i in range(200) %}{{ 'x' * 10 }}{% endfor %}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "output longer than the 1000-byte limit", "expressions");
	ret = render_limited("{% macro m() %}{% for i in range(200) %}xxxxxxxxxx{% endfor %}{% endmacro %}{{ m() }}",
			     &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "output longer than the 1000-byte limit", "inside a macro");
	ret = render_limited("{% for i in range(99) %}xxxxxxxxxx{% endfor %}", &lim, &out, &err);
	ok(!ret && out.len == 990, "under the limit renders (%s)", err.msg);

	gm_jinja_limits_init(&lim);
	lim.max_list = 100;
	ret = render_limited("{{ range(101) | list | length }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "list longer than the 100-item limit", "range()");
	ret = render_limited("{{ [1, 2] * 51 }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "list longer than the 100-item limit", "list repetition");
	ret = render_limited("{{ (range(60) | list) + (range(60) | list) }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "list longer than the 100-item limit", "list concatenation");
	ret = render_limited("{{ ('x' * 101) | list }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "list longer than the 100-item limit", "the characters of a string");
	ret = render_limited("{{ range(100) | list | length }}", &lim, &out, &err);
	ok(!ret && !strcmp(out.buf, "100"), "a list at the limit is fine (%s)", err.msg);

	gm_jinja_limits_init(&lim);
	lim.max_iterations = 1000;
	ret = render_limited("{% for i in range(40) %}{% for j in range(40) %}{% endfor %}{% endfor %}", &lim, &out,
			     &err);
	ok_error(ret, &err, GM_EINVAL, "more than the 1000-step limit", "nested loops");
	ret = render_limited("{% for i in range(30) %}{{ range(30) | select('odd') | list | length }}{% endfor %}", &lim,
			     &out, &err);
	ok_error(ret, &err, GM_EINVAL, "more than the 1000-step limit", "filters count their items");

	gm_jinja_limits_init(&lim);
	ret = render_limited("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "macro calls nested deeper than the 100-call limit", "endless recursion");
	lim.max_call_depth = 5;
	ret = render_limited("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(4) }}", &lim,
			     &out, &err);
	ok(!ret && !strcmp(out.buf, "01234"), "recursion within the limit (%s)", err.msg);
	ret = render_limited("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(5) }}", &lim,
			     &out, &err);
	ok_error(ret, &err, GM_EINVAL, "nested deeper than the 5-call limit", "one call too deep");

	gm_jinja_limits_init(&lim);
	lim.max_seconds = 0.05;
	lim.max_iterations = UINT64_MAX;
	/* the limit is wall-clock time, so is this bound: loose, for a loaded machine (unlimited, it runs for hours) */
	t0 = clock_s(CLOCK_MONOTONIC);
	ret = render_limited("{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
			     &lim, &out, &err);
	ok_error(ret, &err, GM_EINVAL, "render took longer than the 0.05 s time limit", "the time limit");
	ok(clock_s(CLOCK_MONOTONIC) - t0 < 5.0, "... stops soon after (%.3f s)", clock_s(CLOCK_MONOTONIC) - t0);

	gm_buf_release(&out);
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
	test_limits();
	free(files);
	json_object_put(spec);
	free(cpath);
	free(dir);
	return tap_done();
}
