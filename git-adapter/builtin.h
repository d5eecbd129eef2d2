/*
 * builtin.h - the subcommands of git adapter, one file per group.
 */
#ifndef GIT_ADAPTER_BUILTIN_H
#define GIT_ADAPTER_BUILTIN_H

/* cmd-manage.c: the adapters of a model repository */
int cmd_list(int argc, const char **argv);
int cmd_add(int argc, const char **argv);
int cmd_rm(int argc, const char **argv);
int cmd_rename(int argc, const char **argv);
int cmd_export(int argc, const char **argv);
int cmd_merge(int argc, const char **argv);

/*
 * Resolves a model given with -m (a directory for now; a registered name
 * once the registry resolves it) or, without -m, the model directory
 * holding the current directory.  *dir is malloc'd.  0, or an exit status
 * after printing an error.
 */
int adapter_model_dir(const char *model, char **dir);
/* The model directory holding the current directory, quietly: 0 or -1. */
int adapter_model_upwards(char **dir);

/* adapter_model_dir for commands that change the model: NAME@REV is refused. */
int adapter_writable_model(const char *model, char **dir);

/*
 * Commits the change to the adapter directories changed (and changed2,
 * may be NULL; relative to dir) with message, unless no_commit, and says
 * so; a model that is not a git repository is left uncommitted.  0, or an
 * exit status after printing an error.
 */
int adapter_record(const char *dir, int no_commit, const char *changed, const char *changed2,
		   const char *message);

#endif
