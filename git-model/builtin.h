/* builtin.h - the subcommands of git-model, one file each (cmd-NAME.c). */
#ifndef GIT_MODEL_BUILTIN_H
#define GIT_MODEL_BUILTIN_H

int cmd_synth(int argc, const char **argv);
int cmd_info(int argc, const char **argv);
int cmd_checkout(int argc, const char **argv);
int cmd_worktree(int argc, const char **argv);

#endif
