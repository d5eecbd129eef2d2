/* builtin.h - the subcommands of git-model, one file each (cmd-NAME.c). */
#ifndef GIT_MODEL_BUILTIN_H
#define GIT_MODEL_BUILTIN_H

int cmd_synth(int argc, const char **argv);
int cmd_info(int argc, const char **argv);
int cmd_quantize(int argc, const char **argv);
int cmd_clone(int argc, const char **argv);
int cmd_fetch(int argc, const char **argv);
int cmd_pull(int argc, const char **argv);
int cmd_push(int argc, const char **argv);
int cmd_list(int argc, const char **argv);
int cmd_rm(int argc, const char **argv);
int cmd_fsck(int argc, const char **argv);
int cmd_gc(int argc, const char **argv);
int cmd_import(int argc, const char **argv);
int cmd_bundle(int argc, const char **argv);
int cmd_seed(int argc, const char **argv);

struct gm_strlist;
/* A NULL-terminated copy of a pattern list (free the array, not the
 * strings), or NULL when it is empty. */
const char **gm_cmd_patterns(const struct gm_strlist *l);
/* cmd-lfs.c */
int cmd_filter_process(int argc, const char **argv);
int cmd_clean(int argc, const char **argv);
int cmd_smudge(int argc, const char **argv);
int cmd_install(int argc, const char **argv);
int cmd_track(int argc, const char **argv);
int cmd_lfs_fetch(int argc, const char **argv);
int cmd_lfs_push(int argc, const char **argv);
int cmd_checkout(int argc, const char **argv);
int cmd_worktree(int argc, const char **argv);

#endif
