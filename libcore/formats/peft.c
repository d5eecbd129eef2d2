/* peft.c - PEFT LoRA adapter directories (see peft.h). */
#include "formats/peft.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/buf.h"
#include "formats/dtype.h"
#include "base/fs.h"
#include "base/json.h"

#define TENSOR_PREFIX "base_model.model."
#define SUFFIX_A ".lora_A.weight"
#define SUFFIX_B ".lora_B.weight"

static const char *const proj_names[GM_PEFT_PROJ_COUNT] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
};

const char *gm_peft_proj_name(enum gm_peft_proj p)
{
	return (unsigned)p < GM_PEFT_PROJ_COUNT ? proj_names[p] : "?";
}

const char *gm_peft_proj_parent(enum gm_peft_proj p)
{
	return p <= GM_PEFT_O_PROJ ? "self_attn" : "mlp";
}

int gm_peft_proj_from_name(const char *name, enum gm_peft_proj *out)
{
	int i;

	for (i = 0; i < GM_PEFT_PROJ_COUNT; i++) {
		if (!strcmp(name, proj_names[i])) {
			*out = (enum gm_peft_proj)i;
			return 0;
		}
	}
	return GM_ENOENT;
}

int gm_peft_parse_module_name(const char *module, int *layer, enum gm_peft_proj *proj, gm_error *err)
{
	static const char prefix[] = "model.layers.";
	const char *p = module, *dot;
	long n = 0;
	size_t plen;

	if (strncmp(p, prefix, sizeof(prefix) - 1))
		goto bad;
	p += sizeof(prefix) - 1;
	if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.'))
		goto bad;
	for (; *p >= '0' && *p <= '9'; p++) {
		n = n * 10 + (*p - '0');
		if (n > 1000000)
			goto bad;
	}
	if (*p++ != '.')
		goto bad;
	dot = strchr(p, '.');
	if (!dot || strchr(dot + 1, '.') || gm_peft_proj_from_name(dot + 1, proj))
		goto bad;
	plen = strlen(gm_peft_proj_parent(*proj));
	if ((size_t)(dot - p) != plen || strncmp(p, gm_peft_proj_parent(*proj), plen))
		goto bad;
	*layer = (int)n;
	return 0;
bad:
	return gm_error_set(err, GM_EUNSUPPORTED,
			    "LoRA on module '%s' is not supported: only model.layers.N.self_attn."
			    "{q,k,v,o}_proj and model.layers.N.mlp.{gate,up,down}_proj are", module);
}

/* ------------------------------------------------------------ regexes */

/*
 * Rewrites a Python regular expression as a POSIX extended one: (?:...)
 * becomes (...), \d and \D become classes, lazy quantifiers become greedy
 * (the same strings match).  Returns 0, or -1 with *why set.
 */
/* bounds on a pattern, so that a hostile one cannot make regcomp take seconds (real ones are a few dozen bytes) */
#define PEFT_REGEX_MAX_LEN 1024
#define PEFT_REGEX_MAX_QUANT 32

static int py_regex_to_posix(const char *src, gm_buf *out, const char **why)
{
	const char *p = src;
	int quant = 0, n_quant = 0;

	if (strlen(src) > PEFT_REGEX_MAX_LEN) {
		*why = "longer than the 1024-byte limit";
		return -1;
	}
	while (*p) {
		if (quant && *p == '?') { /* lazy quantifier: same language */
			p++;
			quant = 0;
			continue;
		}
		if (quant && (*p == '*' || *p == '{')) {
			*why = "multiple repeat"; /* Python's re refuses it too */
			return -1;
		}
		if (quant && *p == '+') {
			*why = "possessive quantifiers are not supported";
			return -1;
		}
		if ((*p == '*' || *p == '+' || *p == '?' || *p == '{') && ++n_quant > PEFT_REGEX_MAX_QUANT) {
			*why = "more than 32 quantifiers";
			return -1;
		}
		quant = 0;
		if (*p == '\\') {
			if (!p[1]) {
				*why = "trailing backslash";
				return -1;
			}
			if (p[1] == 'd')
				gm_buf_adds(out, "[0-9]");
			else if (p[1] == 'D')
				gm_buf_adds(out, "[^0-9]");
			else if (strchr("AZz", p[1])) {
				*why = "\\A, \\Z and \\z are not supported";
				return -1;
			} else
				gm_buf_add(out, p, 2);
			p += 2;
		} else if (*p == '(' && p[1] == '?') {
			if (p[2] != ':') {
				*why = "(?...) groups other than (?:...) are not supported";
				return -1;
			}
			gm_buf_addch(out, '(');
			p += 3;
		} else if (*p == '[') {
			gm_buf_addch(out, *p++);
			if (*p == '^')
				gm_buf_addch(out, *p++);
			if (*p == ']')
				gm_buf_addch(out, *p++);
			while (*p && *p != ']') {
				if (*p == '\\' && p[1]) {
					if (p[1] == 'd')
						gm_buf_adds(out, "0-9");
					else if (p[1] == ']' || p[1] == '\\' || isalnum((unsigned char)p[1])) {
						*why = "escapes other than \\d inside [...] are not supported";
						return -1;
					} else
						gm_buf_addch(out, p[1]);
					p += 2;
				} else
					gm_buf_addch(out, *p++);
			}
			if (!*p) {
				*why = "unterminated [";
				return -1;
			}
			gm_buf_addch(out, *p++);
		} else {
			quant = *p == '*' || *p == '+' || *p == '?' || *p == '}';
			gm_buf_addch(out, *p++);
		}
	}
	return 0;
}

/* Compiles "^PREFIX(SRC)$"; what and kind name the pattern in errors. */
static int compile_regex(regex_t *re, const char *prefix, const char *src, const char *what,
			 const char *kind, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	const char *why = NULL;
	char msg[256];
	int rc;

	gm_buf_addf(&b, "^%s(", prefix);
	if (py_regex_to_posix(src, &b, &why)) {
		gm_buf_release(&b);
		return gm_error_set(err, GM_EUNSUPPORTED, "%s: %s '%s': %s", what, kind, src, why);
	}
	gm_buf_adds(&b, ")$");
	rc = regcomp(re, b.buf, REG_EXTENDED | REG_NOSUB);
	gm_buf_release(&b);
	if (rc) {
		regerror(rc, re, msg, sizeof(msg));
		return gm_error_set(err, GM_EFORMAT, "%s: %s '%s' is not a valid regular expression: %s",
				    what, kind, src, msg);
	}
	return 0;
}

static int regex_matches(const regex_t *re, const char *s)
{
	return !regexec(re, s, 0, NULL, 0);
}

/* ------------------------------------------------------------ config */

void gm_peft_config_release(gm_peft_config *cfg)
{
	size_t i;

	free(cfg->peft_type);
	free(cfg->bias);
	free(cfg->base_model);
	free(cfg->task_type);
	for (i = 0; i < cfg->n_target_modules; i++)
		free(cfg->target_modules[i]);
	free(cfg->target_modules);
	if (cfg->target_kind == GM_PEFT_TARGET_REGEX)
		regfree(&cfg->target_re);
	for (i = 0; i < cfg->n_rank_pattern; i++) {
		free(cfg->rank_pattern[i].key);
		regfree(&cfg->rank_pattern[i].re);
	}
	free(cfg->rank_pattern);
	for (i = 0; i < cfg->n_alpha_pattern; i++) {
		free(cfg->alpha_pattern[i].key);
		regfree(&cfg->alpha_pattern[i].re);
	}
	free(cfg->alpha_pattern);
	memset(cfg, 0, sizeof(*cfg));
}

/* An optional string: *out is a copy, or NULL when absent or null. */
static int opt_string(json_object *obj, const char *key, const char *what, char **out, gm_error *err)
{
	const char *s;
	int ret = gm_json_get_string(obj, key, what, &s, err);

	if (ret == GM_ENOENT) {
		gm_error_clear(err);
		return 0;
	}
	if (ret)
		return ret;
	*out = gm_xstrdup(s);
	return 0;
}

static int parse_refusals(json_object *obj, const char *what, gm_peft_config *cfg, gm_error *err)
{
	json_object *v;
	int flag = 0, ret;

	if ((ret = gm_json_opt_bool(obj, "use_dora", what, &flag, err)))
		return ret;
	if (flag)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: DoRA adapters (use_dora: true) are not supported; only plain LoRA is",
				    what);
	if ((ret = opt_string(obj, "bias", what, &cfg->bias, err)))
		return ret;
	if (!cfg->bias)
		cfg->bias = gm_xstrdup("none");
	if (strcmp(cfg->bias, "none"))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: bias \"%s\" is not supported: the adapter trains bias vectors; "
				    "only bias \"none\" is", what, cfg->bias);
	flag = 0;
	if ((ret = gm_json_opt_bool(obj, "lora_bias", what, &flag, err)))
		return ret;
	if (flag)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: lora_bias: true is not supported (lora_B has a bias vector)", what);
	if (json_object_object_get_ex(obj, "modules_to_save", &v) && v) {
		if (!json_object_is_type(v, json_type_array))
			return gm_error_set(err, GM_EFORMAT, "%s: 'modules_to_save' must be a list or null, not %s",
					    what, json_type_to_name(json_object_get_type(v)));
		if (json_object_array_length(v))
			return gm_error_set(err, GM_EUNSUPPORTED,
					    "%s: modules_to_save %s is not supported: the adapter carries full "
					    "copies of those modules, not LoRA weights", what,
					    json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
	}
	return 0;
}

static int parse_numbers(json_object *obj, const char *what, gm_peft_config *cfg, gm_error *err)
{
	int ret;

	cfg->r = 8; /* PEFT's defaults */
	cfg->lora_alpha = 8;
	if ((ret = gm_json_opt_int64(obj, "r", what, &cfg->r, err)))
		return ret;
	if (cfg->r <= 0)
		return gm_error_set(err, GM_EFORMAT, "%s: 'r' must be a positive integer, not %" PRId64,
				    what, cfg->r);
	if ((ret = gm_json_opt_double(obj, "lora_alpha", what, &cfg->lora_alpha, err)))
		return ret;
	if (!isfinite(cfg->lora_alpha))
		return gm_error_set(err, GM_EFORMAT, "%s: 'lora_alpha' must be a finite number", what);
	if ((ret = gm_json_opt_bool(obj, "use_rslora", what, &cfg->use_rslora, err)))
		return ret;
	if ((ret = gm_json_opt_double(obj, "lora_dropout", what, &cfg->lora_dropout, err)))
		return ret;
	if (!(cfg->lora_dropout >= 0 && cfg->lora_dropout < 1))
		return gm_error_set(err, GM_EFORMAT, "%s: 'lora_dropout' must be in [0, 1), not %g", what,
				    cfg->lora_dropout);
	return 0;
}

static int parse_targets(json_object *obj, const char *what, gm_peft_config *cfg, gm_error *err)
{
	json_object *v;
	size_t i, n;
	int ret;

	if (!json_object_object_get_ex(obj, "target_modules", &v) || !v)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: missing 'target_modules' (a list of module names, a regular "
				    "expression or \"all-linear\")", what);
	if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		cfg->target_modules = gm_xcalloc(1, sizeof(char *));
		cfg->target_modules[0] = gm_xstrdup(s);
		cfg->n_target_modules = 1;
		if (!strcasecmp(s, "all-linear")) {
			cfg->target_kind = GM_PEFT_TARGET_ALL_LINEAR;
			return 0;
		}
		if ((ret = compile_regex(&cfg->target_re, "", s, what, "target_modules", err)))
			return ret;
		cfg->target_kind = GM_PEFT_TARGET_REGEX;
		return 0;
	}
	if (!json_object_is_type(v, json_type_array))
		return gm_error_set(err, GM_EFORMAT,
				    "%s: 'target_modules' must be a list or a string, not %s", what,
				    json_type_to_name(json_object_get_type(v)));
	n = json_object_array_length(v);
	if (!n)
		return gm_error_set(err, GM_EFORMAT, "%s: 'target_modules' is empty", what);
	cfg->target_modules = gm_xcalloc(n, sizeof(char *));
	for (i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(v, i);
		if (!json_object_is_type(e, json_type_string))
			return gm_error_set(err, GM_EFORMAT,
					    "%s: 'target_modules' entry %zu must be a string, not %s", what,
					    i, json_type_to_name(json_object_get_type(e)));
		cfg->target_modules[i] = gm_xstrdup(json_object_get_string(e));
		cfg->n_target_modules = i + 1;
	}
	cfg->target_kind = GM_PEFT_TARGET_LIST;
	return 0;
}

/* rank_pattern (is_rank) or alpha_pattern: {"KEY": number, ...}, null or absent. */
static int parse_patterns(json_object *obj, const char *key, int is_rank, const char *what,
			  struct gm_peft_pattern **out, size_t *n_out, gm_error *err)
{
	json_object *v;
	struct json_object_iterator it, end;
	size_t n;
	char kind[64];
	gm_buf where = GM_BUF_INIT;

	if (!json_object_object_get_ex(obj, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: '%s' must be an object, not %s", what, key,
				    json_type_to_name(json_object_get_type(v)));
	n = (size_t)json_object_object_length(v);
	if (!n)
		return 0;
	*out = gm_xcalloc(n, sizeof(**out));
	snprintf(kind, sizeof(kind), "%s key", key);
	/* type errors of the values name the pattern, not only the key */
	gm_buf_addf(&where, "%s: %s", what, key);
	it = json_object_iter_begin(v);
	end = json_object_iter_end(v);
	for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
		const char *name = json_object_iter_peek_name(&it);
		struct gm_peft_pattern *p = &(*out)[*n_out];
		double value;
		int64_t r = 0;
		int ret;

		if (is_rank) {
			ret = gm_json_get_int64(v, name, where.buf, &r, err);
			if (!ret && r <= 0)
				ret = gm_error_set(err, GM_EFORMAT,
						   "%s: rank_pattern '%s' must be a positive integer", what, name);
			value = (double)r;
		} else {
			ret = gm_json_get_double(v, name, where.buf, &value, err);
			if (!ret && !isfinite(value))
				ret = gm_error_set(err, GM_EFORMAT,
						   "%s: alpha_pattern '%s' must be a finite number", what, name);
		}
		if (ret == GM_ENOENT)
			ret = gm_error_set(err, GM_EFORMAT, "%s: %s '%s' has no value", what, key, name);
		if (!ret)
			ret = compile_regex(&p->re, "(.*\\.)?", name, what, kind, err);
		if (ret) {
			gm_buf_release(&where);
			return ret;
		}
		p->key = gm_xstrdup(name);
		p->value = value;
		(*n_out)++;
	}
	gm_buf_release(&where);
	return 0;
}

int gm_peft_config_parse(json_object *obj, const char *what, gm_peft_config *cfg, gm_error *err)
{
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	if (!json_object_is_type(obj, json_type_object))
		return gm_error_set(err, GM_EFORMAT, "%s: expected a JSON object", what);
	if ((ret = opt_string(obj, "peft_type", what, &cfg->peft_type, err)))
		goto fail;
	if (!cfg->peft_type) {
		ret = gm_error_set(err, GM_EFORMAT, "%s: missing 'peft_type' (expected \"LORA\")", what);
		goto fail;
	}
	if (strcmp(cfg->peft_type, "LORA")) {
		ret = gm_error_set(err, GM_EUNSUPPORTED,
				   "%s: peft_type \"%s\" is not supported; only LORA adapters are", what,
				   cfg->peft_type);
		goto fail;
	}
	if ((ret = parse_refusals(obj, what, cfg, err)) ||
	    (ret = parse_numbers(obj, what, cfg, err)) ||
	    (ret = opt_string(obj, "base_model_name_or_path", what, &cfg->base_model, err)) ||
	    (ret = opt_string(obj, "task_type", what, &cfg->task_type, err)) ||
	    (ret = parse_targets(obj, what, cfg, err)) ||
	    (ret = parse_patterns(obj, "rank_pattern", 1, what, &cfg->rank_pattern,
				  &cfg->n_rank_pattern, err)) ||
	    (ret = parse_patterns(obj, "alpha_pattern", 0, what, &cfg->alpha_pattern,
				  &cfg->n_alpha_pattern, err)))
		goto fail;
	return 0;
fail:
	gm_peft_config_release(cfg);
	return ret;
}

int gm_peft_config_load(const char *path, gm_peft_config *cfg, gm_error *err)
{
	json_object *obj = NULL;
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	if ((ret = gm_json_parse_file(path, &obj, err)))
		return ret;
	ret = gm_peft_config_parse(obj, path, cfg, err);
	json_object_put(obj);
	return ret;
}

int gm_peft_config_targets(const gm_peft_config *cfg, const char *module)
{
	size_t i, len = strlen(module);

	switch (cfg->target_kind) {
	case GM_PEFT_TARGET_ALL_LINEAR:
		return 1;
	case GM_PEFT_TARGET_REGEX:
		return regex_matches(&cfg->target_re, module);
	case GM_PEFT_TARGET_LIST:
		for (i = 0; i < cfg->n_target_modules; i++) {
			const char *t = cfg->target_modules[i];
			size_t tlen = strlen(t);
			if (!strcmp(module, t))
				return 1;
			if (len > tlen && module[len - tlen - 1] == '.' && !strcmp(module + len - tlen, t))
				return 1;
		}
		return 0;
	}
	return 0;
}

static const struct gm_peft_pattern *find_pattern(const struct gm_peft_pattern *p, size_t n,
						  const char *module)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (regex_matches(&p[i].re, module))
			return &p[i];
	return NULL;
}

int64_t gm_peft_config_rank(const gm_peft_config *cfg, const char *module)
{
	const struct gm_peft_pattern *p = find_pattern(cfg->rank_pattern, cfg->n_rank_pattern, module);

	return p ? (int64_t)p->value : cfg->r;
}

double gm_peft_config_alpha(const gm_peft_config *cfg, const char *module)
{
	const struct gm_peft_pattern *p = find_pattern(cfg->alpha_pattern, cfg->n_alpha_pattern, module);

	return p ? p->value : cfg->lora_alpha;
}

double gm_peft_scale(int64_t r, double alpha, int use_rslora)
{
	return use_rslora ? alpha / sqrt((double)r) : alpha / (double)r;
}

double gm_peft_config_scale(const gm_peft_config *cfg)
{
	return gm_peft_scale(cfg->r, cfg->lora_alpha, cfg->use_rslora);
}

/* ------------------------------------------------------------ adapter */

void gm_peft_close(gm_peft_adapter *ad)
{
	size_t i;

	if (!ad)
		return;
	for (i = 0; i < ad->n_modules; i++)
		free(ad->modules[i].name);
	free(ad->modules);
	if (ad->st)
		gm_st_close(ad->st);
	gm_peft_config_release(&ad->config);
	free(ad->dir);
	free(ad->config_path);
	free(ad->weights_path);
	free(ad);
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !memcmp(s + n - m, suffix, m);
}

static int not_lora_tensor(const gm_peft_adapter *ad, const char *name, gm_error *err)
{
	if (strstr(name, "lora_magnitude_vector"))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: tensor '%s' is a DoRA magnitude vector; DoRA adapters are not supported",
				    ad->weights_path, name);
	if (strstr(name, "lora_embedding_"))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: tensor '%s': LoRA on embeddings is not supported", ad->weights_path,
				    name);
	if (ends_with(name, ".lora_B.bias") || ends_with(name, ".lora_A.bias"))
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: tensor '%s' is a LoRA bias (lora_bias); not supported",
				    ad->weights_path, name);
	return gm_error_set(err, GM_EFORMAT,
			    "%s: tensor '%s' is not a LoRA weight (expected base_model.model.MODULE."
			    "lora_A.weight or base_model.model.MODULE.lora_B.weight)", ad->weights_path, name);
}

static gm_peft_module *module_for(gm_peft_adapter *ad, const char *name, size_t len, int layer,
				  enum gm_peft_proj proj, size_t *alloc)
{
	gm_peft_module *m;
	size_t i;

	for (i = 0; i < ad->n_modules; i++)
		if (ad->modules[i].layer == layer && ad->modules[i].proj == proj)
			return &ad->modules[i];
	if (ad->n_modules == *alloc) {
		*alloc = *alloc ? 2 * *alloc : 32;
		ad->modules = gm_xrealloc(ad->modules, *alloc * sizeof(*ad->modules));
	}
	m = &ad->modules[ad->n_modules++];
	memset(m, 0, sizeof(*m));
	m->name = gm_xmalloc(len + 1);
	memcpy(m->name, name, len);
	m->name[len] = '\0';
	m->layer = layer;
	m->proj = proj;
	return m;
}

/* Sorts every tensor of the file into its module. */
static int group_tensors(gm_peft_adapter *ad, gm_error *err)
{
	size_t i, n = gm_st_count(ad->st), alloc = 0;
	size_t plen = strlen(TENSOR_PREFIX), slen = strlen(SUFFIX_A);

	for (i = 0; i < n; i++) {
		const gm_tensor *t = gm_st_tensor(ad->st, i);
		const char *name = t->name;
		size_t len = strlen(name);
		int is_a = ends_with(name, SUFFIX_A), layer;
		enum gm_peft_proj proj;
		gm_peft_module *m;
		char *module;

		if (strncmp(name, TENSOR_PREFIX, plen) || len <= plen + slen ||
		    (!is_a && !ends_with(name, SUFFIX_B)))
			return not_lora_tensor(ad, name, err);
		module = gm_xmalloc(len - plen - slen + 1);
		memcpy(module, name + plen, len - plen - slen);
		module[len - plen - slen] = '\0';
		if (gm_peft_parse_module_name(module, &layer, &proj, err)) {
			free(module);
			return gm_error_prefix(err, "%s: tensor '%s'", ad->weights_path, name);
		}
		m = module_for(ad, module, strlen(module), layer, proj, &alloc);
		free(module);
		if (is_a)
			m->a = t;
		else
			m->b = t;
	}
	if (!ad->n_modules)
		return gm_error_set(err, GM_EFORMAT, "%s: no LoRA tensors in the file", ad->weights_path);
	return 0;
}

static int cmp_module(const void *x, const void *y)
{
	const gm_peft_module *a = x, *b = y;

	if (a->layer != b->layer)
		return a->layer < b->layer ? -1 : 1;
	return (int)a->proj - (int)b->proj;
}

static int check_tensor(const gm_peft_adapter *ad, const gm_tensor *t, gm_error *err)
{
	if (t->dtype != GM_DTYPE_F32 && t->dtype != GM_DTYPE_F16 && t->dtype != GM_DTYPE_BF16)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: tensor '%s' has dtype %s; LoRA weights must be F32, F16 or BF16",
				    ad->weights_path, t->name, gm_dtype_name(t->dtype));
	if (t->ndim != 2)
		return gm_error_set(err, GM_EFORMAT, "%s: tensor '%s' has %d dimensions, expected 2",
				    ad->weights_path, t->name, t->ndim);
	if (t->shape[0] <= 0 || t->shape[1] <= 0)
		return gm_error_set(err, GM_EFORMAT, "%s: tensor '%s' is empty ([%" PRId64 ", %" PRId64 "])",
				    ad->weights_path, t->name, t->shape[0], t->shape[1]);
	return 0;
}

static int check_module(gm_peft_adapter *ad, gm_peft_module *m, gm_error *err)
{
	const gm_peft_config *cfg = &ad->config;
	int64_t want;
	int ret;

	if (!m->a || !m->b)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: module '%s' has %s but no %s (missing tensor '" TENSOR_PREFIX "%s%s')",
				    ad->weights_path, m->name, m->a ? "lora_A" : "lora_B",
				    m->a ? "lora_B" : "lora_A", m->name, m->a ? SUFFIX_B : SUFFIX_A);
	if ((ret = check_tensor(ad, m->a, err)) || (ret = check_tensor(ad, m->b, err)))
		return ret;
	m->rank = m->a->shape[0];
	m->in = m->a->shape[1];
	m->out = m->b->shape[0];
	if (m->b->shape[1] != m->rank)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: module '%s': rank mismatch: lora_A is [%" PRId64 ", %" PRId64
				    "] (rank %" PRId64 ") but lora_B is [%" PRId64 ", %" PRId64 "] (rank %" PRId64 ")",
				    ad->weights_path, m->name, m->a->shape[0], m->a->shape[1], m->rank,
				    m->b->shape[0], m->b->shape[1], m->b->shape[1]);
	want = gm_peft_config_rank(cfg, m->name);
	if (m->rank != want)
		return gm_error_set(err, GM_EFORMAT,
				    "%s: module '%s' has rank %" PRId64 " but %s says %s %" PRId64,
				    ad->weights_path, m->name, m->rank, ad->config_path,
				    want == cfg->r ? "r =" : "its rank_pattern gives", want);
	if (!gm_peft_config_targets(cfg, m->name))
		return gm_error_set(err, GM_EFORMAT,
				    "%s: module '%s' is not selected by target_modules in %s",
				    ad->weights_path, m->name, ad->config_path);
	m->alpha = gm_peft_config_alpha(cfg, m->name);
	m->scale = gm_peft_scale(m->rank, m->alpha, cfg->use_rslora);
	ad->n_params += m->a->numel + m->b->numel;
	ad->n_bytes += m->a->nbytes + m->b->nbytes;
	return 0;
}

static int open_weights(gm_peft_adapter *ad, gm_error *err)
{
	char *bin;
	int has_bin;

	if (gm_is_file(ad->weights_path))
		return gm_st_open(ad->weights_path, &ad->st, err);
	bin = gm_path_join(ad->dir, "adapter_model.bin");
	has_bin = gm_is_file(bin);
	free(bin);
	if (has_bin)
		return gm_error_set(err, GM_EUNSUPPORTED,
				    "%s: adapter_model.bin (a pickle) is not supported; save the adapter "
				    "as safetensors (save_pretrained(..., safe_serialization=True))", ad->dir);
	return gm_error_set(err, GM_ENOENT, "%s: not a PEFT adapter directory: %s is missing", ad->dir,
			    GM_PEFT_WEIGHTS_FILE);
}

int gm_peft_open(const char *dir, gm_peft_adapter **out, gm_error *err)
{
	gm_peft_adapter *ad;
	size_t i;
	int ret;

	*out = NULL;
	if (!gm_is_dir(dir)) {
		if (access(dir, F_OK) && errno == ENOENT)
			return gm_error_set(err, GM_ENOENT, "%s: no such directory", dir);
		return gm_error_set(err, GM_EINVAL, "%s: not a directory (expected a PEFT adapter directory)",
				    dir);
	}
	ad = gm_xcalloc(1, sizeof(*ad));
	ad->dir = gm_xstrdup(dir);
	ad->config_path = gm_path_join(dir, GM_PEFT_CONFIG_FILE);
	ad->weights_path = gm_path_join(dir, GM_PEFT_WEIGHTS_FILE);
	if (!gm_is_file(ad->config_path)) {
		ret = gm_error_set(err, GM_ENOENT, "%s: not a PEFT adapter directory: %s is missing", dir,
				   GM_PEFT_CONFIG_FILE);
		goto fail;
	}
	if ((ret = gm_peft_config_load(ad->config_path, &ad->config, err)) ||
	    (ret = open_weights(ad, err)) || (ret = group_tensors(ad, err)))
		goto fail;
	qsort(ad->modules, ad->n_modules, sizeof(*ad->modules), cmp_module);
	for (i = 0; i < ad->n_modules; i++)
		if ((ret = check_module(ad, &ad->modules[i], err)))
			goto fail;
	*out = ad;
	return 0;
fail:
	gm_peft_close(ad);
	return ret;
}

const gm_peft_module *gm_peft_find(const gm_peft_adapter *ad, int layer, enum gm_peft_proj proj)
{
	size_t i;

	for (i = 0; i < ad->n_modules; i++)
		if (ad->modules[i].layer == layer && ad->modules[i].proj == proj)
			return &ad->modules[i];
	return NULL;
}

/* ------------------------------------------------------------ norm */

#define NORM_CHUNK 256 /* columns of A, or rows of B, converted at a time */

static int float_view(const gm_tensor *t, size_t *esize, gm_error *err)
{
	if (t->dtype != GM_DTYPE_F32 && t->dtype != GM_DTYPE_F16 && t->dtype != GM_DTYPE_BF16 &&
	    t->dtype != GM_DTYPE_F64)
		return gm_error_set(err, GM_EUNSUPPORTED, "tensor '%s': dtype %s is not a float type",
				    t->name, gm_dtype_name(t->dtype));
	*esize = gm_dtype_bits(t->dtype) / 8;
	return 0;
}

/* g[i][j] (i <= j) += sum_k x[i][k] x[j][k] for an r x w block x. */
static void gram_rows(double *g, const float *x, size_t r, size_t w)
{
	size_t i, j, k;

	for (i = 0; i < r; i++) {
		for (j = i; j < r; j++) {
			double s = 0;
			for (k = 0; k < w; k++)
				s += (double)x[i * w + k] * x[j * w + k];
			g[i * r + j] += s;
		}
	}
}

/* A A^T, upper triangle, converting NORM_CHUNK columns of every row at a time. */
static int gram_a(const gm_tensor *a, double *g, float *buf, gm_error *err)
{
	size_t r = (size_t)a->shape[0], in = (size_t)a->shape[1], es, c0, i, w;
	const unsigned char *base = a->data;
	int ret;

	if ((ret = float_view(a, &es, err)))
		return ret;
	for (c0 = 0; c0 < in; c0 += w) {
		w = in - c0 < NORM_CHUNK ? in - c0 : NORM_CHUNK;
		for (i = 0; i < r; i++)
			if ((ret = gm_dtype_to_f32(a->dtype, base + (i * in + c0) * es, buf + i * w, w, err)))
				return ret;
		gram_rows(g, buf, r, w);
	}
	return 0;
}

/* B^T B, upper triangle, converting NORM_CHUNK rows at a time. */
static int gram_b(const gm_tensor *b, double *g, float *buf, gm_error *err)
{
	size_t out = (size_t)b->shape[0], r = (size_t)b->shape[1], es, k0, k, i, j, h;
	const unsigned char *base = b->data;
	int ret;

	if ((ret = float_view(b, &es, err)))
		return ret;
	for (k0 = 0; k0 < out; k0 += h) {
		h = out - k0 < NORM_CHUNK ? out - k0 : NORM_CHUNK;
		if ((ret = gm_dtype_to_f32(b->dtype, base + k0 * r * es, buf, h * r, err)))
			return ret;
		for (k = 0; k < h; k++) {
			const float *row = buf + k * r;
			for (i = 0; i < r; i++)
				for (j = i; j < r; j++)
					g[i * r + j] += (double)row[i] * row[j];
		}
	}
	return 0;
}

int gm_peft_delta_norm(const gm_tensor *a, const gm_tensor *b, double scale, double *out,
		       gm_error *err)
{
	size_t r, i, j;
	double *ga, *gb, sum = 0;
	float *buf;
	int ret;

	if (a->ndim != 2 || b->ndim != 2 || a->shape[0] != b->shape[1] || a->shape[0] <= 0)
		return gm_error_set(err, GM_EINVAL,
				    "cannot multiply '%s' by '%s': expected B [out, r] and A [r, in]",
				    b->name, a->name);
	r = (size_t)a->shape[0];
	ga = gm_xcalloc(r * r, sizeof(double));
	gb = gm_xcalloc(r * r, sizeof(double));
	buf = gm_xmalloc(r * NORM_CHUNK * sizeof(float));
	ret = gram_a(a, ga, buf, err);
	if (!ret)
		ret = gram_b(b, gb, buf, err);
	if (!ret) {
		for (i = 0; i < r; i++) {
			sum += ga[i * r + i] * gb[i * r + i];
			for (j = i + 1; j < r; j++)
				sum += 2 * ga[i * r + j] * gb[i * r + j];
		}
		*out = fabs(scale) * sqrt(sum > 0 ? sum : 0);
	}
	free(ga);
	free(gb);
	free(buf);
	return ret;
}

int gm_peft_module_norm(const gm_peft_module *m, double *out, gm_error *err)
{
	return gm_peft_delta_norm(m->a, m->b, m->scale, out, err);
}
