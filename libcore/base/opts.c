/* opts.c - command-line option parsing (see opts.h). */
#include "base/opts.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

void gm_strlist_push(gm_strlist *l, const char *s)
{
	if (l->n == l->alloc) {
		l->alloc = l->alloc ? 2 * l->alloc : 4;
		l->items = gm_xrealloc(l->items, l->alloc * sizeof(*l->items));
	}
	l->items[l->n++] = s;
}

void gm_strlist_clear(gm_strlist *l)
{
	free(l->items);
	l->items = NULL;
	l->n = l->alloc = 0;
}

static int takes_arg(const struct gm_option *o)
{
	return o->type == GM_OPT_TYPE_STRING || o->type == GM_OPT_TYPE_INT ||
	       o->type == GM_OPT_TYPE_U64 || o->type == GM_OPT_TYPE_DOUBLE ||
	       o->type == GM_OPT_TYPE_STRING_LIST;
}

static void opt_name(const struct gm_option *o, int use_long, char *out, size_t n)
{
	if (use_long && o->long_name)
		snprintf(out, n, "--%s", o->long_name);
	else
		snprintf(out, n, "-%c", o->short_name);
}

static int set_value(const struct gm_option *o, const char *name, const char *arg, int negated,
		     gm_error *err)
{
	char *end;

	switch (o->type) {
	case GM_OPT_TYPE_FLAG:
		*(int *)o->value = !negated;
		return 0;
	case GM_OPT_TYPE_COUNT:
		*(int *)o->value = negated ? 0 : (*(int *)o->value < 0 ? 1 : *(int *)o->value + 1);
		return 0;
	case GM_OPT_TYPE_SET_INT:
		*(int *)o->value = negated ? 0 : (int)o->defval;
		return 0;
	case GM_OPT_TYPE_STRING:
		*(const char **)o->value = arg;
		return 0;
	case GM_OPT_TYPE_STRING_LIST:
		gm_strlist_push(o->value, arg);
		return 0;
	case GM_OPT_TYPE_INT: {
		long v;
		errno = 0;
		v = strtol(arg, &end, 10);
		if (!*arg || *end || errno)
			return gm_error_set(err, GM_EINVAL, "option '%s' expects an integer, not '%s'", name, arg);
		if (o->maxval > o->defval && (v < o->defval || v > o->maxval))
			return gm_error_set(err, GM_EINVAL, "option '%s' must be between %ld and %ld, not %ld",
					    name, o->defval, o->maxval, v);
		*(long *)o->value = v;
		return 0;
	}
	case GM_OPT_TYPE_U64: {
		unsigned long long v;
		errno = 0;
		v = strtoull(arg, &end, 10);
		if (!*arg || *end || errno || arg[0] == '-')
			return gm_error_set(err, GM_EINVAL, "option '%s' expects a non-negative integer, not '%s'",
					    name, arg);
		*(unsigned long long *)o->value = v;
		return 0;
	}
	case GM_OPT_TYPE_DOUBLE: {
		double v;
		errno = 0;
		v = strtod(arg, &end);
		if (!*arg || *end || errno || !isfinite(v))
			return gm_error_set(err, GM_EINVAL, "option '%s' expects a number, not '%s'", name, arg);
		*(double *)o->value = v;
		return 0;
	}
	default:
		return gm_error_set(err, GM_EINVAL, "option '%s' cannot be set", name);
	}
}

static const struct gm_option *find_long(const struct gm_option *opts, const char *name, size_t len,
					 int *negated)
{
	const struct gm_option *o;

	*negated = 0;
	for (o = opts; o->type != GM_OPT_TYPE_END; o++)
		if (o->long_name && strlen(o->long_name) == len && !strncmp(o->long_name, name, len))
			return o;
	if (len > 3 && !strncmp(name, "no-", 3)) {
		for (o = opts; o->type != GM_OPT_TYPE_END; o++)
			if (o->long_name && !takes_arg(o) && strlen(o->long_name) == len - 3 &&
			    !strncmp(o->long_name, name + 3, len - 3)) {
				*negated = 1;
				return o;
			}
	}
	return NULL;
}

static const struct gm_option *find_short(const struct gm_option *opts, int c)
{
	const struct gm_option *o;

	for (o = opts; o->type != GM_OPT_TYPE_END; o++)
		if (o->short_name == c && o->type != GM_OPT_TYPE_GROUP)
			return o;
	return NULL;
}

/* Handles argv[*i] = "--name[=value]"; may consume argv[*i + 1]. */
static int parse_long(int argc, const char **argv, int *i, const struct gm_option *opts, gm_error *err)
{
	const char *name = argv[*i] + 2, *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	char shown[128];
	int negated;
	const struct gm_option *o = find_long(opts, name, len, &negated);

	if (!o)
		return gm_error_set(err, GM_EINVAL, "unknown option '--%.*s'", (int)len, name);
	opt_name(o, 1, shown, sizeof(shown));
	if (negated)
		snprintf(shown, sizeof(shown), "--no-%s", o->long_name);
	if (!takes_arg(o)) {
		if (eq)
			return gm_error_set(err, GM_EINVAL, "option '%s' takes no value", shown);
		return set_value(o, shown, NULL, negated, err);
	}
	if (eq)
		return set_value(o, shown, eq + 1, 0, err);
	if (*i + 1 >= argc)
		return gm_error_set(err, GM_EINVAL, "option '%s' requires a value (%s)", shown,
				    o->argh ? o->argh : "an argument");
	return set_value(o, shown, argv[++*i], 0, err);
}

/* Handles a cluster "-abc" or "-nVALUE"; may consume argv[*i + 1]. */
static int parse_short(int argc, const char **argv, int *i, const struct gm_option *opts, gm_error *err)
{
	const char *p;

	for (p = argv[*i] + 1; *p; p++) {
		const struct gm_option *o = find_short(opts, *p);
		char shown[4] = { '-', *p, 0, 0 };
		int ret;

		if (!o)
			return gm_error_set(err, GM_EINVAL, "unknown switch '%c'", *p);
		if (!takes_arg(o)) {
			if ((ret = set_value(o, shown, NULL, 0, err)))
				return ret;
			continue;
		}
		if (p[1])
			return set_value(o, shown, p + 1, 0, err);
		if (*i + 1 >= argc)
			return gm_error_set(err, GM_EINVAL, "option '%s' requires a value (%s)", shown,
					    o->argh ? o->argh : "an argument");
		return set_value(o, shown, argv[++*i], 0, err);
	}
	return 0;
}

int gm_parse_options(int argc, const char **argv, const struct gm_option *opts, int flags,
		     int version_ok, gm_error *err)
{
	int i, nout = 0, ret;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (a[0] != '-' || !a[1]) {
			if (flags & GM_PARSE_STOP_AT_NON_OPTION) {
				while (i < argc)
					argv[nout++] = argv[i++];
				return nout;
			}
			argv[nout++] = a;
			continue;
		}
		if (!strcmp(a, "--")) {
			if (flags & GM_PARSE_KEEP_DASHDASH)
				argv[nout++] = a;
			for (i++; i < argc; i++)
				argv[nout++] = argv[i];
			return nout;
		}
		if (!strcmp(a, "-h"))
			return GM_PARSE_HELP_SHORT;
		if (!strcmp(a, "--help"))
			return GM_PARSE_HELP_LONG;
		if (!strcmp(a, "--git-completion-helper")) {
			gm_print_completion(stdout, opts);
			return GM_PARSE_COMPLETION;
		}
		if (version_ok && !strcmp(a, "--version"))
			return GM_PARSE_VERSION;
		ret = a[1] == '-' ? parse_long(argc, argv, &i, opts, err)
				  : parse_short(argc, argv, &i, opts, err);
		if (ret)
			return GM_PARSE_ERROR;
	}
	return nout;
}

void gm_print_usage(FILE *out, const char *const *usage, const struct gm_option *opts)
{
	const struct gm_option *o;
	int first = 1;

	for (; *usage; usage++) {
		fprintf(out, "%s%s\n", first ? "usage: " : "   or: ", *usage);
		first = 0;
	}
	if (opts && opts->type != GM_OPT_TYPE_END)
		fputc('\n', out);
	for (o = opts; o && o->type != GM_OPT_TYPE_END; o++) {
		gm_buf b = GM_BUF_INIT;

		if (o->type == GM_OPT_TYPE_GROUP) {
			fprintf(out, "\n%s\n", o->help);
			continue;
		}
		gm_buf_adds(&b, "    ");
		if (o->short_name)
			gm_buf_addf(&b, "-%c", o->short_name);
		if (o->short_name && o->long_name)
			gm_buf_adds(&b, ", ");
		if (o->long_name)
			gm_buf_addf(&b, "--%s", o->long_name);
		if (takes_arg(o))
			gm_buf_addf(&b, " <%s>", o->argh ? o->argh : "value");
		if (b.len < 30)
			fprintf(out, "%-30s%s\n", b.buf, o->help);
		else
			fprintf(out, "%s\n%-30s%s\n", b.buf, "", o->help);
		gm_buf_release(&b);
	}
}

void gm_print_completion(FILE *out, const struct gm_option *opts)
{
	const struct gm_option *o;
	const char *sep = "";

	for (o = opts; o && o->type != GM_OPT_TYPE_END; o++) {
		if (!o->long_name)
			continue;
		fprintf(out, "%s--%s%s", sep, o->long_name, takes_arg(o) ? "=" : "");
		sep = " ";
	}
	for (o = opts; o && o->type != GM_OPT_TYPE_END; o++)
		if (o->long_name && o->type == GM_OPT_TYPE_FLAG)
			fprintf(out, "%s--no-%s", sep, o->long_name);
	fputc('\n', out);
}
