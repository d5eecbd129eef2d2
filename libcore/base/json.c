/* json.c - json-c wrappers with precise errors. */
#include "base/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fs.h"

int gm_json_parse(const char *data, size_t len, const char *what, json_object **out, gm_error *err)
{
	json_tokener *tok;
	json_object *obj;
	enum json_tokener_error jerr;
	size_t end;

	if (len > INT32_MAX)
		return gm_error_set(err, GM_EFORMAT, "%s: JSON document too large (%zu bytes)", what, len);
	tok = json_tokener_new();
	if (!tok)
		return gm_error_set(err, GM_ENOMEM, "%s: out of memory", what);
	obj = json_tokener_parse_ex(tok, data, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (jerr == json_tokener_continue || (!obj && jerr == json_tokener_success)) {
		json_object_put(obj);
		return gm_error_set(err, GM_EFORMAT, "%s: invalid JSON: unexpected end of input", what);
	}
	if (jerr != json_tokener_success)
		return gm_error_set(err, GM_EFORMAT, "%s: invalid JSON at byte %zu: %s", what, end,
				    json_tokener_error_desc(jerr));
	/* Only whitespace (and NULs used as padding) may follow the value. */
	for (; end < len; end++) {
		char c = data[end];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\0') {
			json_object_put(obj);
			return gm_error_set(err, GM_EFORMAT, "%s: invalid JSON: trailing data at byte %zu", what, end);
		}
	}
	*out = obj;
	return 0;
}

int gm_json_parse_file(const char *path, json_object **out, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	int ret = gm_read_file(path, &b, err);

	if (!ret)
		ret = gm_json_parse(b.buf, b.len, path, out, err);
	gm_buf_release(&b);
	return ret;
}

int gm_json_write_file(const char *path, json_object *obj, gm_error *err)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
						       JSON_C_TO_STRING_SPACED |
						       JSON_C_TO_STRING_NOSLASHESCAPE);
	gm_buf b = GM_BUF_INIT;
	int ret;

	gm_buf_adds(&b, s);
	gm_buf_addch(&b, '\n');
	ret = gm_write_file_atomic(path, b.buf, b.len, 0644, err);
	gm_buf_release(&b);
	return ret;
}

int gm_json_is_integer(json_object *v)
{
	return json_object_is_type(v, json_type_int);
}

static int lookup(json_object *obj, const char *key, json_object **v)
{
	if (!obj || !json_object_is_type(obj, json_type_object))
		return GM_ENOENT;
	if (!json_object_object_get_ex(obj, key, v) || !*v)
		return GM_ENOENT;
	return 0;
}

static int type_error(gm_error *err, const char *what, const char *key, const char *type, json_object *v)
{
	return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be %s, not %s", what, key, type,
			    json_type_to_name(json_object_get_type(v)));
}

int gm_json_get_int64(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err)
{
	json_object *v;

	if (lookup(obj, key, &v))
		return gm_error_set(err, GM_ENOENT, "%s: missing '%s'", what, key);
	if (json_object_is_type(v, json_type_double)) {
		/* 1.0 and 1e6 are integers written by Python's json as floats. */
		double d = json_object_get_double(v);
		if (d != floor(d) || fabs(d) > 9.0e15)
			return type_error(err, what, key, "an integer", v);
		*out = (int64_t)d;
		return 0;
	}
	if (!gm_json_is_integer(v))
		return type_error(err, what, key, "an integer", v);
	errno = 0;
	*out = json_object_get_int64(v);
	if (errno == EINVAL || errno == ERANGE)
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' is out of range", what, key);
	return 0;
}

int gm_json_get_double(json_object *obj, const char *key, const char *what, double *out, gm_error *err)
{
	json_object *v;

	if (lookup(obj, key, &v))
		return gm_error_set(err, GM_ENOENT, "%s: missing '%s'", what, key);
	if (!json_object_is_type(v, json_type_double) && !gm_json_is_integer(v))
		return type_error(err, what, key, "a number", v);
	*out = json_object_get_double(v);
	return 0;
}

int gm_json_get_bool(json_object *obj, const char *key, const char *what, int *out, gm_error *err)
{
	json_object *v;

	if (lookup(obj, key, &v))
		return gm_error_set(err, GM_ENOENT, "%s: missing '%s'", what, key);
	if (!json_object_is_type(v, json_type_boolean))
		return type_error(err, what, key, "true or false", v);
	*out = json_object_get_boolean(v);
	return 0;
}

int gm_json_get_string(json_object *obj, const char *key, const char *what, const char **out, gm_error *err)
{
	json_object *v;

	if (lookup(obj, key, &v))
		return gm_error_set(err, GM_ENOENT, "%s: missing '%s'", what, key);
	if (!json_object_is_type(v, json_type_string))
		return type_error(err, what, key, "a string", v);
	*out = json_object_get_string(v);
	return 0;
}

#define GM_JSON_OPT(name, type, getter)                                                   \
	int name(json_object *obj, const char *key, const char *what, type *out, gm_error *err) \
	{                                                                                 \
		json_object *v;                                                           \
		if (lookup(obj, key, &v))                                                 \
			return 0;                                                         \
		return getter(obj, key, what, out, err);                                  \
	}

GM_JSON_OPT(gm_json_opt_int64, int64_t, gm_json_get_int64)
GM_JSON_OPT(gm_json_opt_double, double, gm_json_get_double)
GM_JSON_OPT(gm_json_opt_bool, int, gm_json_get_bool)

/*
 * As Python's json writes it (repr): the shortest digits that
 * read back to the same value, fixed notation for 1e-4 <= |d| < 1e16 with
 * at least one decimal ("1000000.0"), else "1e-06"; Infinity, -Infinity
 * and NaN as Python's json writes them.
 */
json_object *gm_json_new_double(double d)
{
	char buf[64], digits[64];
	int p, exp;

	if (isnan(d))
		return json_object_new_double_s(d, "NaN");
	if (isinf(d))
		return json_object_new_double_s(d, d > 0 ? "Infinity" : "-Infinity");
	for (p = 0; p < 17; p++) {
		snprintf(digits, sizeof(digits), "%.*e", p, d);
		if (strtod(digits, NULL) == d)
			break;
	}
	exp = atoi(strchr(digits, 'e') + 1);
	if (d != 0 && (exp < -4 || exp >= 16)) {
		snprintf(buf, sizeof(buf), "%s", digits);
	} else {
		int decimals = p - exp > 1 ? p - exp : 1;
		snprintf(buf, sizeof(buf), "%.*f", decimals, d);
	}
	return json_object_new_double_s(d, buf);
}
