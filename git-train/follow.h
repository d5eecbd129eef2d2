/*
 * follow.h - git train --follow FILE|-: online learning from the command
 * line (online.h, learnrepo.h): JSONL examples read as the file grows (or
 * from standard input until its end), trained as they come, the state
 * committed on train/NAME every so often and at the end.
 */
#ifndef GIT_TRAIN_FOLLOW_H
#define GIT_TRAIN_FOLLOW_H

#include "train/online.h"

struct follow_opts {
	const char *model;        /* a work tree at the top of its repository */
	const char *name;
	const char *path;         /* "-": standard input */
	gm_online_opts online;
	long commit_steps;        /* 0: by time only */
	double commit_seconds;    /* 0: by count only */
	int verbosity;
};

/* Runs until standard input ends, or SIGINT / SIGTERM; the exit status. */
int follow_run(const struct follow_opts *o);

#endif
