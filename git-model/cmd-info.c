/*
 * git model info - describe a model directory: architecture, shapes,
 * parameters, generation defaults and files.
 *
 * The model is opened and validated (gm_model_open) first, so a broken
 * model is reported as such instead of being half described.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "builtin.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "base/json.h"
#include "formats/gguf.h"
#include "formats/model.h"
#include "storage/registry.h"
#include "storage/repo.h"
#include "storage/resolve.h"
#include "storage/worktree.h"

static const char *const info_usage[] = {
	"git model info [--json] (<name>[@<rev>] | <dir>)",
	NULL
};

/* Files besides the weights that belong to a model, in display order. */
static const char *const config_files[] = {
	"config.json", "generation_config.json", "model.safetensors.index.json", NULL
};
static const char *const tokenizer_files[] = {
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
	"vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", NULL
};

struct info_file {
	char *name;
	unsigned long long size;
};

struct info_files {
	struct info_file *items;
	size_t n, alloc;
	unsigned long long total;
};

static void files_add(struct info_files *f, const char *dir, const char *name)
{
	char *path = gm_path_join(dir, name);
	struct stat st;

	if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
		if (f->n == f->alloc) {
			f->alloc = f->alloc ? 2 * f->alloc : 16;
			f->items = gm_xrealloc(f->items, f->alloc * sizeof(*f->items));
		}
		f->items[f->n].name = gm_xstrdup(name);
		f->items[f->n++].size = (unsigned long long)st.st_size;
		f->total += (unsigned long long)st.st_size;
	}
	free(path);
}

static void files_collect(struct info_files *f, const gm_model *m)
{
	size_t i;

	if (gm_gguf_is_file(m->dir)) {
		/* one file holds it all */
		char *d = gm_xstrdup(m->dir), *slash = strrchr(d, '/');
		if (slash) {
			*slash = 0;
			files_add(f, d, slash + 1);
		} else {
			files_add(f, ".", d);
		}
		free(d);
		return;
	}
	for (i = 0; config_files[i]; i++)
		files_add(f, m->dir, config_files[i]);
	for (i = 0; i < gm_weights_file_count(m->weights); i++) {
		const char *p = gm_weights_file_path(m->weights, i), *slash = strrchr(p, '/');
		files_add(f, m->dir, slash ? slash + 1 : p);
	}
	for (i = 0; tokenizer_files[i]; i++)
		files_add(f, m->dir, tokenizer_files[i]);
}

static void files_release(struct info_files *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		free(f->items[i].name);
	free(f->items);
	memset(f, 0, sizeof(*f));
}

/* The GGUF files of a directory (a Hub -GGUF repository: one per quantization). */
struct info_variant {
	char *name;
	const char *type;  /* general.file_type's name; NULL when unknown or not fetched */
	unsigned long long size;
	int fetched;       /* 0: an LFS pointer (size: the object's) */
};

struct info_variants {
	struct info_variant *v;
	size_t n;
};

static int cmp_variant(const void *a, const void *b)
{
	return strcmp(((const struct info_variant *)a)->name, ((const struct info_variant *)b)->name);
}

/* The object size an LFS pointer file gives ("size N"), or 0. */
static unsigned long long pointer_size(const char *path)
{
	gm_buf b = GM_BUF_INIT;
	unsigned long long size = 0;
	const char *p;

	if (!gm_read_file(path, &b, NULL) && b.len < 1024 && (p = strstr(b.buf, "\nsize ")))
		size = strtoull(p + 6, NULL, 10);
	gm_buf_release(&b);
	return size;
}

static void variants_collect(struct info_variants *iv, const char *dir)
{
	struct dirent *de;
	DIR *d;

	memset(iv, 0, sizeof(*iv));
	if (!gm_is_dir(dir) || !(d = opendir(dir)))
		return;
	while ((de = readdir(d))) {
		char *path = gm_path_join(dir, de->d_name);
		struct info_variant *v;
		gm_gguf *g = NULL;
		struct stat st;

		if (de->d_name[0] == '.' || !strncmp(de->d_name, "mmproj", 6) || !gm_gguf_is_file(path) ||
		    stat(path, &st)) {
			free(path);
			continue;
		}
		iv->v = gm_xrealloc(iv->v, (iv->n + 1) * sizeof(*iv->v));
		v = &iv->v[iv->n++];
		memset(v, 0, sizeof(*v));
		v->name = gm_xstrdup(de->d_name);
		if (!gm_gguf_open(path, &g, NULL)) {
			v->fetched = 1;
			v->size = (unsigned long long)st.st_size;
			v->type = gm_gguf_file_type_name(g); /* a static string */
			gm_gguf_close(g);
		} else {
			v->size = pointer_size(path);
		}
		free(path);
	}
	closedir(d);
	qsort(iv->v, iv->n, sizeof(*iv->v), cmp_variant);
}

static void variants_release(struct info_variants *iv)
{
	size_t i;

	for (i = 0; i < iv->n; i++)
		free(iv->v[i].name);
	free(iv->v);
}

static void print_variants_text(const struct info_variants *iv)
{
	size_t i, width = 0;

	if (!iv->n)
		return;
	puts("variants:");
	for (i = 0; i < iv->n; i++)
		if (strlen(iv->v[i].name) > width)
			width = strlen(iv->v[i].name);
	for (i = 0; i < iv->n; i++)
		printf("    %-*s  %-8s %12llu bytes%s\n", (int)width, iv->v[i].name,
		       iv->v[i].type ? iv->v[i].type : "-", iv->v[i].size, iv->v[i].fetched ? "" : "  (not fetched)");
}

static json_object *variants_json(const struct info_variants *iv)
{
	json_object *a = json_object_new_array();
	size_t i;

	for (i = 0; i < iv->n; i++) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(iv->v[i].name));
		json_object_object_add(o, "type", iv->v[i].type ? json_object_new_string(iv->v[i].type) : NULL);
		json_object_object_add(o, "size", json_object_new_int64((int64_t)iv->v[i].size));
		json_object_object_add(o, "fetched", json_object_new_boolean(iv->v[i].fetched));
		json_object_array_add(a, o);
	}
	return a;
}

/* What the registry and the repository add to a model directory's
 * description: its name, revision, source, adapters and worktrees. */
struct info_repo {
	gm_registry_model entry; /* name NULL when not registered */
	char revision[GM_REPO_OID_HEXLEN + 1]; /* the commit described ("" outside a repository) */
	char **adapters;         /* adapters/NN_NAME directories holding adapter_config.json */
	size_t n_adapters;
	gm_worktree_info *worktrees; /* with their disk use */
	size_t n_worktrees;
};

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void repo_collect(struct info_repo *ir, const char *spec, const char *dir)
{
	gm_registry *reg = NULL;
	gm_repo *r = NULL;
	char *name, *rev, *real;
	int found = 0;
	DIR *d;

	memset(ir, 0, sizeof(*ir));
	gm_repo_split_spec(spec, &name, &rev);
	if (gm_registry_open(NULL, &reg, NULL) == 0) {
		if (!strchr(name, '/') && !gm_is_dir(spec))
			found = gm_registry_get_model(reg, name, &ir->entry, NULL) == 0;
		else if ((real = realpath(dir, NULL))) {
			gm_registry_find_by_path(reg, real, &ir->entry, &found, NULL);
			free(real);
		}
		if (!found)
			memset(&ir->entry, 0, sizeof(ir->entry));
		else if (gm_worktree_list(ir->entry.name, &ir->worktrees, &ir->n_worktrees, NULL))
			ir->n_worktrees = 0;
		gm_registry_close(reg);
	}
	if (found && gm_repo_open(ir->entry.path, &r, NULL) == 0) {
		if (gm_repo_resolve(r, rev, ir->revision, NULL))
			ir->revision[0] = '\0';
		gm_repo_close(r);
	} else if (!found) {
		/* only a repository's own top directory: a model directory
		 * that merely sits inside some checkout has no revision */
		char *dotgit = gm_path_join(dir, ".git");
		int is_repo = gm_is_dir(dotgit);
		free(dotgit);
		if (is_repo && gm_repo_open(dir, &r, NULL) == 0) {
			if (gm_repo_resolve(r, NULL, ir->revision, NULL))
				ir->revision[0] = '\0';
			gm_repo_close(r);
		}
	}
	real = gm_path_join(dir, "adapters");
	if ((d = opendir(real))) {
		struct dirent *de;
		while ((de = readdir(d))) {
			char *sub = gm_path_join(real, de->d_name), *cfg = gm_path_join(sub, "adapter_config.json");
			if (de->d_name[0] != '.' && gm_is_file(cfg)) {
				ir->adapters = gm_xrealloc(ir->adapters, (ir->n_adapters + 1) * sizeof(*ir->adapters));
				ir->adapters[ir->n_adapters++] = gm_xstrdup(de->d_name);
			}
			free(sub);
			free(cfg);
		}
		closedir(d);
		qsort(ir->adapters, ir->n_adapters, sizeof(*ir->adapters), cmp_names);
	}
	free(real);
	free(name);
	free(rev);
}

static void repo_release(struct info_repo *ir)
{
	size_t i;

	for (i = 0; i < ir->n_adapters; i++)
		free(ir->adapters[i]);
	free(ir->adapters);
	gm_worktree_infos_free(ir->worktrees, ir->n_worktrees);
	gm_registry_model_release(&ir->entry);
}

static void print_repo_text_head(const struct info_repo *ir)
{
	if (ir->entry.name)
		gm_cmd_print_field("name:", "%s", ir->entry.name);
	if (ir->revision[0])
		gm_cmd_print_field("revision:", "%s", ir->revision);
	if (ir->entry.name && ir->entry.source[0])
		gm_cmd_print_field("source:", "%s", ir->entry.source);
}

static void print_repo_text_tail(const struct info_repo *ir)
{
	size_t i;

	printf("adapters:%s\n", ir->n_adapters ? "" : " none");
	for (i = 0; i < ir->n_adapters; i++)
		printf("    adapters/%s\n", ir->adapters[i]);
	printf("worktrees:%s\n", ir->n_worktrees ? "" : " none");
	for (i = 0; i < ir->n_worktrees; i++) {
		const gm_worktree_info *w = &ir->worktrees[i];
		gm_buf used = GM_BUF_INIT, full = GM_BUF_INIT;

		gm_buf_add_human_bytes(&used, w->used);
		gm_buf_add_human_bytes(&full, w->full);
		printf("    %s  %s  %s%s  %s used (a full copy: %s)\n", w->path, w->ref, w->driver,
		       w->missing ? ", missing" : "", used.buf, full.buf);
		gm_buf_release(&used);
		gm_buf_release(&full);
	}
}

static void repo_json(json_object *o, const struct info_repo *ir)
{
	json_object *a = json_object_new_array(), *w = json_object_new_array();
	size_t i;

	json_object_object_add(o, "name", ir->entry.name ? json_object_new_string(ir->entry.name) : NULL);
	json_object_object_add(o, "revision", ir->revision[0] ? json_object_new_string(ir->revision) : NULL);
	json_object_object_add(o, "source", ir->entry.name ? json_object_new_string(ir->entry.source) : NULL);
	for (i = 0; i < ir->n_adapters; i++) {
		json_object *x = json_object_new_object();
		gm_buf p = GM_BUF_INIT;
		gm_buf_addf(&p, "adapters/%s", ir->adapters[i]);
		json_object_object_add(x, "name", json_object_new_string(ir->adapters[i]));
		json_object_object_add(x, "path", json_object_new_string(p.buf));
		json_object_array_add(a, x);
		gm_buf_release(&p);
	}
	json_object_object_add(o, "adapters", a);
	for (i = 0; i < ir->n_worktrees; i++) {
		json_object *x = json_object_new_object();
		json_object_object_add(x, "path", json_object_new_string(ir->worktrees[i].path));
		json_object_object_add(x, "ref", json_object_new_string(ir->worktrees[i].ref));
		json_object_object_add(x, "method", json_object_new_string(ir->worktrees[i].driver));
		json_object_object_add(x, "used", json_object_new_int64((int64_t)ir->worktrees[i].used));
		json_object_object_add(x, "full", json_object_new_int64((int64_t)ir->worktrees[i].full));
		json_object_array_add(w, x);
	}
	json_object_object_add(o, "worktrees", w);
}

static void add_ids(gm_buf *b, const int64_t *ids, int n)
{
	int i;

	if (!n)
		gm_buf_adds(b, "none");
	for (i = 0; i < n; i++)
		gm_buf_addf(b, "%s%lld", i ? ", " : "", (long long)ids[i]);
}

static void add_rope(gm_buf *b, const gm_model_config *c)
{
	gm_buf_addf(b, "%.15g", c->rope_theta); /* 1000000, not 1e+06 */
	if (c->rope_scaling == GM_ROPE_LLAMA3)
		gm_buf_addf(b, " (llama3 scaling: factor %g, low_freq_factor %g, high_freq_factor %g, "
			    "original context %lld)", c->rope_factor, c->rope_low_freq_factor,
			    c->rope_high_freq_factor, (long long)c->rope_original_max_position_embeddings);
}

static void add_generation(gm_buf *b, const gm_generation_config *g)
{
	gm_buf_addf(b, "do_sample %s, temperature %g, top_p %g, top_k %lld", g->do_sample ? "true" : "false",
		    g->temperature, g->top_p, (long long)g->top_k);
	if (g->min_p > 0)
		gm_buf_addf(b, ", min_p %g", g->min_p);
	if (g->repetition_penalty != 1.0)
		gm_buf_addf(b, ", repetition_penalty %g", g->repetition_penalty);
	if (g->max_new_tokens >= 0)
		gm_buf_addf(b, ", max_new_tokens %lld", (long long)g->max_new_tokens);
}

static void print_text(const gm_model *m, const struct info_files *f, const struct info_repo *ir,
		       const struct info_variants *iv)
{
	const gm_model_config *c = &m->config;
	gm_buf b = GM_BUF_INIT;
	size_t i, width = 0;
	char dtype[64];

	print_repo_text_head(ir);
	gm_cmd_print_field("path:", "%s", ir->entry.name && ir->entry.path ? ir->entry.path : m->dir);
	gm_cmd_print_field("architecture:", "%s", c->architecture);
	gm_cmd_print_field("model_type:", "%s", c->model_type);
	gm_buf_add_human_count(&b, m->n_params);
	gm_cmd_print_field("parameters:", "%s (%llu)", b.buf, (unsigned long long)m->n_params);
	gm_weights_dtype_mix(m->weights, dtype, sizeof(dtype));
	gm_cmd_print_field("dtype:", "%s", dtype);
	gm_cmd_print_field("layers:", "%lld", (long long)c->num_hidden_layers);
	gm_cmd_print_field("hidden:", "%lld", (long long)c->hidden_size);
	gm_cmd_print_field("intermediate:", "%lld", (long long)c->intermediate_size);
	gm_cmd_print_field("heads:", "%lld (kv heads %lld)", (long long)c->num_attention_heads,
		    (long long)c->num_key_value_heads);
	gm_cmd_print_field("head_dim:", "%lld", (long long)c->head_dim);
	gm_cmd_print_field("vocab:", "%lld", (long long)c->vocab_size);
	gm_cmd_print_field("context:", "%lld", (long long)c->max_position_embeddings);
	gm_buf_reset(&b);
	add_rope(&b, c);
	gm_cmd_print_field("rope theta:", "%s", b.buf);
	gm_cmd_print_field("tied embeddings:", "%s", c->tie_word_embeddings ? "yes" : "no");
	gm_buf_reset(&b);
	add_ids(&b, m->generation.eos_token_ids, m->generation.n_eos);
	gm_cmd_print_field("eos ids:", "%s", b.buf);
	gm_buf_reset(&b);
	add_generation(&b, &m->generation);
	gm_cmd_print_field("generation:", "%s", b.buf);
	puts("files:");
	for (i = 0; i < f->n; i++)
		if (strlen(f->items[i].name) > width)
			width = strlen(f->items[i].name);
	for (i = 0; i < f->n; i++)
		printf("    %-*s  %12llu bytes\n", (int)width, f->items[i].name, f->items[i].size);
	gm_buf_reset(&b);
	gm_buf_add_human_bytes(&b, f->total);
	gm_cmd_print_field("size:", "%s (%llu bytes)", b.buf, f->total);
	gm_buf_release(&b);
	print_variants_text(iv);
	print_repo_text_tail(ir);
}

static json_object *ids_json(const int64_t *ids, int n)
{
	json_object *a = json_object_new_array();
	int i;

	for (i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_int64(ids[i]));
	return a;
}

static json_object *generation_json(const gm_generation_config *g)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "do_sample", json_object_new_boolean(g->do_sample));
	json_object_object_add(o, "temperature", gm_json_new_double(g->temperature));
	json_object_object_add(o, "top_p", gm_json_new_double(g->top_p));
	json_object_object_add(o, "top_k", json_object_new_int64(g->top_k));
	json_object_object_add(o, "min_p", gm_json_new_double(g->min_p));
	json_object_object_add(o, "repetition_penalty", gm_json_new_double(g->repetition_penalty));
	json_object_object_add(o, "max_new_tokens",
			       g->max_new_tokens >= 0 ? json_object_new_int64(g->max_new_tokens) : NULL);
	return o;
}

static json_object *rope_scaling_json(const gm_model_config *c)
{
	json_object *o;

	if (c->rope_scaling != GM_ROPE_LLAMA3)
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "rope_type", json_object_new_string("llama3"));
	json_object_object_add(o, "factor", gm_json_new_double(c->rope_factor));
	json_object_object_add(o, "low_freq_factor", gm_json_new_double(c->rope_low_freq_factor));
	json_object_object_add(o, "high_freq_factor", gm_json_new_double(c->rope_high_freq_factor));
	json_object_object_add(o, "original_max_position_embeddings",
			       json_object_new_int64(c->rope_original_max_position_embeddings));
	return o;
}

static json_object *files_json(const struct info_files *f)
{
	json_object *a = json_object_new_array();
	size_t i;

	for (i = 0; i < f->n; i++) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(f->items[i].name));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)f->items[i].size));
		json_object_array_add(a, o);
	}
	return a;
}

static void print_json(const gm_model *m, const struct info_files *f, const struct info_repo *ir,
		       const struct info_variants *iv)
{
	const gm_model_config *c = &m->config;
	json_object *o = json_object_new_object();
	char dtype[64];

	gm_weights_dtype_mix(m->weights, dtype, sizeof(dtype));
	json_object_object_add(o, "path", json_object_new_string(ir->entry.name && ir->entry.path ?
								  ir->entry.path : m->dir));
	json_object_object_add(o, "architecture", json_object_new_string(c->architecture));
	json_object_object_add(o, "model_type", json_object_new_string(c->model_type));
	json_object_object_add(o, "parameters", json_object_new_int64((int64_t)m->n_params));
	json_object_object_add(o, "dtype", json_object_new_string(dtype));
	json_object_object_add(o, "layers", json_object_new_int64(c->num_hidden_layers));
	json_object_object_add(o, "hidden_size", json_object_new_int64(c->hidden_size));
	json_object_object_add(o, "intermediate_size", json_object_new_int64(c->intermediate_size));
	json_object_object_add(o, "heads", json_object_new_int64(c->num_attention_heads));
	json_object_object_add(o, "kv_heads", json_object_new_int64(c->num_key_value_heads));
	json_object_object_add(o, "head_dim", json_object_new_int64(c->head_dim));
	json_object_object_add(o, "vocab_size", json_object_new_int64(c->vocab_size));
	json_object_object_add(o, "context_length", json_object_new_int64(c->max_position_embeddings));
	json_object_object_add(o, "rope_theta", gm_json_new_double(c->rope_theta));
	json_object_object_add(o, "rope_scaling", rope_scaling_json(c));
	json_object_object_add(o, "tie_word_embeddings", json_object_new_boolean(c->tie_word_embeddings));
	json_object_object_add(o, "eos_token_ids",
			       ids_json(m->generation.eos_token_ids, m->generation.n_eos));
	json_object_object_add(o, "generation", generation_json(&m->generation));
	json_object_object_add(o, "files", files_json(f));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)f->total));
	if (iv->n) /* only for GGUF directories: the other keys stay as they were */
		json_object_object_add(o, "variants", variants_json(iv));
	repo_json(o, ir);
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

int cmd_info(int argc, const char **argv)
{
	int json = 0, status, n;
	const struct gm_option options[] = {
		GM_OPT_FLAG(0, "json", &json, "print one JSON object"),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model info", "git-model", info_usage, options };
	gm_error err = GM_ERROR_INIT;
	struct info_files files = { NULL, 0, 0, 0 };
	struct info_repo ir;
	struct info_variants variants;
	gm_model *m;
	char *dir, *gguf = NULL;
	const char *described;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	if (n == 0)
		return gm_cmd_usage_error(&cmd, "missing <name> or <dir>: the model to describe");
	if (n > 1)
		return gm_cmd_usage_error(&cmd, "too many arguments: one model expected");
	if (gm_gguf_is_file(argv[0]))
		dir = gm_xstrdup(argv[0]);
	else if (gm_repo_resolve_model(argv[0], &dir, &err))
		return gm_cmd_error(&err);
	/* a directory of GGUF files and no safetensors weights: the first one fetched is described */
	variants_collect(&variants, dir);
	described = dir;
	{
		char *st = gm_path_join(dir, "model.safetensors"), *idx = gm_path_join(dir, "model.safetensors.index.json");
		size_t i;
		if (!gm_is_file(st) && !gm_is_file(idx))
			for (i = 0; i < variants.n && described == dir; i++)
				if (variants.v[i].fetched)
					described = gguf = gm_path_join(dir, variants.v[i].name);
		free(st);
		free(idx);
	}
	/* mapped, not copied: info reads the headers and a few bytes, not every weight */
	if (gm_model_open_mode(described, GM_WEIGHTS_MMAP, &m, &err)) {
		variants_release(&variants);
		free(gguf);
		free(dir);
		return gm_cmd_error(&err);
	}
	repo_collect(&ir, argv[0], dir);
	files_collect(&files, m);
	if (json)
		print_json(m, &files, &ir, &variants);
	else
		print_text(m, &files, &ir, &variants);
	variants_release(&variants);
	free(gguf);
	files_release(&files);
	repo_release(&ir);
	gm_model_close(m);
	free(dir);
	return 0;
}
