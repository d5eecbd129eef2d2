/*
 * json.h - JSON helpers over json-c with precise error messages.
 *
 * Parsed objects are json-c objects (json_object *) owned by the caller and
 * released with json_object_put.  Getters name the key and the expected type
 * in their error, prefixed with the "what" the caller gives (a file name).
 */
#ifndef GM_JSON_H
#define GM_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "base/error.h"

/* Parses len bytes (need not be NUL-terminated).  what names the source in
 * errors; the error says where parsing stopped. */
int gm_json_parse(const char *data, size_t len, const char *what, json_object **out, gm_error *err);
int gm_json_parse_file(const char *path, json_object **out, gm_error *err);

/* Writes obj pretty-printed with a final newline, atomically. */
int gm_json_write_file(const char *path, json_object *obj, gm_error *err);

/*
 * Typed getters.  Each returns 0 and sets *out when key is present with the
 * right type; GM_ENOENT when absent or null (and *out untouched);
 * GM_EFORMAT when present with another type.
 */
int gm_json_get_int64(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err);
int gm_json_get_double(json_object *obj, const char *key, const char *what, double *out, gm_error *err);
int gm_json_get_bool(json_object *obj, const char *key, const char *what, int *out, gm_error *err);
int gm_json_get_string(json_object *obj, const char *key, const char *what, const char **out, gm_error *err);

/* Like the getters, but absence (or null) is not an error: *out keeps its
 * default and 0 is returned. */
int gm_json_opt_int64(json_object *obj, const char *key, const char *what, int64_t *out, gm_error *err);
int gm_json_opt_double(json_object *obj, const char *key, const char *what, double *out, gm_error *err);
int gm_json_opt_bool(json_object *obj, const char *key, const char *what, int *out, gm_error *err);

/* Strict integer test: json-c also converts doubles and strings, we do not. */
int gm_json_is_integer(json_object *v);

/*
 * A new JSON number written as Python's json module writes it: the fewest
 * digits that read back the same ("0.7", not "0.69999999999999996"), at
 * least one decimal ("1000000.0"), exponent form outside 1e-4..1e16.
 */
json_object *gm_json_new_double(double d);

#endif
