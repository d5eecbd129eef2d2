/* builtin.h - the subcommands of git-model, one file each (cmd-NAME.c). */
#ifndef GIT_MODEL_BUILTIN_H
#define GIT_MODEL_BUILTIN_H

int cmd_synth(int argc, const char **argv);
int cmd_info(int argc, const char **argv);
/* cmd-lfs.c */
int cmd_filter_process(int argc, const char **argv);
int cmd_clean(int argc, const char **argv);
int cmd_smudge(int argc, const char **argv);
int cmd_install(int argc, const char **argv);
int cmd_track(int argc, const char **argv);
int cmd_lfs_fetch(int argc, const char **argv);
int cmd_lfs_push(int argc, const char **argv);

#endif
