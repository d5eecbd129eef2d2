/*
 * git model seed - share registered models' revisions over BitTorrent
 * from their LFS stores (p2p.h), in the foreground or as a daemon, and
 * show what the running seeders do (--status) or stop them (--stop).
 *
 * Each seeder writes its state every second to
 * DATA/seeds/PID.status, next to the registry (DATA is the registry's
 * directory); --status reads those of the seeders still alive.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/cmd.h"
#include "base/fs.h"
#include "base/log.h"
#include "builtin.h"
#include "storage/p2p.h"
#include "storage/registry.h"
#include "storage/repo.h"

static const char *const seed_usage[] = {
	"git model seed [--daemon] [--upload-limit <rate>] [--port <n>] <name>[@<rev>]...",
	"git model seed --create-only <name>[@<rev>]...",
	"git model seed --status",
	"git model seed --stop",
	NULL
};

static volatile sig_atomic_t stop_seeding;

static void on_signal(int sig)
{
	(void)sig;
	stop_seeding = 1;
}

/* DATA/seeds, created; caller frees. */
static char *seeds_dir(gm_error *err)
{
	char *db = NULL, *slash, *dir;

	if (gm_registry_default_path(&db, err))
		return NULL;
	slash = strrchr(db, '/');
	if (slash)
		*slash = '\0';
	dir = gm_path_join(slash ? db : ".", "seeds");
	free(db);
	if (gm_mkdir_p(dir, 0755, err)) {
		free(dir);
		return NULL;
	}
	return dir;
}

/* 0 when process pid is not git-model (its seeder died and the pid went to
 * another program); 1 when it is, or when /proc cannot tell. */
static int is_seeder(long pid)
{
	char path[64], comm[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	if (!(f = fopen(path, "r")))
		return 1;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	return !strncmp(comm, "git-model", 9) || !strncmp(comm, "lt-git-model", 12);
}

/* Calls fn for each DATA/seeds/PID.status of a live seeder (removing the
 * files of dead ones); returns how many there were. */
static int each_seeder(const char *dir, void (*fn)(const char *path, long pid))
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char *end, *path;
		long pid = strtol(de->d_name, &end, 10);
		if (pid <= 0 || strcmp(end, ".status"))
			continue;
		path = gm_path_join(dir, de->d_name);
		if ((kill((pid_t)pid, 0) && errno == ESRCH) || !is_seeder(pid)) {
			unlink(path);
		} else {
			fn(path, pid);
			n++;
		}
		free(path);
	}
	closedir(d);
	return n;
}

static void print_status(const char *path, long pid)
{
	gm_buf b = GM_BUF_INIT;

	(void)pid;
	if (gm_read_file(path, &b, NULL) == 0)
		fwrite(b.buf, 1, b.len, stdout);
	gm_buf_release(&b);
}

static void stop_one(const char *path, long pid)
{
	(void)path;
	if (kill((pid_t)pid, SIGTERM) == 0)
		printf("stopped the seeder %ld\n", pid);
}

struct ready_ctx {
	int fd;       /* the daemon's pipe to its parent, or -1 */
	int quiet;
	size_t n;
};

static void on_ready(void *vctx, int port)
{
	struct ready_ctx *c = vctx;

	if (c->fd >= 0) {
		char line[64];
		int len = snprintf(line, sizeof(line), "%d\n", port);
		if (write(c->fd, line, (size_t)len) != len)
			gm_debug("seed: cannot tell the parent");
		close(c->fd);
		c->fd = -1;
	} else if (!c->quiet) {
		fprintf(stderr, "seeding %zu revision%s on port %d (Ctrl-C stops)\n", c->n, c->n == 1 ? "" : "s", port);
	}
}

/* Opens the revisions and seeds them until a signal; status_path gets the state. */
static int seed_run(int argc, const char **argv, gm_p2p_config *c, const char *status_path, struct ready_ctx *rc,
		    gm_error *err)
{
	gm_p2p_seed_target *t = gm_xcalloc((size_t)argc + 1, sizeof(*t));
	gm_repo **repos = gm_xcalloc((size_t)argc + 1, sizeof(*repos));
	char (*hex)[GM_REPO_OID_HEXLEN + 1] = gm_xcalloc((size_t)argc + 1, sizeof(*hex));
	char **names = gm_xcalloc((size_t)argc + 1, sizeof(*names));
	int i, ret = 0;

	for (i = 0; i < argc && !ret; i++) {
		char *rev = NULL;
		gm_repo_split_spec(argv[i], &names[i], &rev);
		free(rev);
		if ((ret = gm_repo_open_spec(argv[i], &repos[i], hex[i], err)))
			break;
		t[i].repo = repos[i];
		t[i].name = names[i];
		t[i].hex = hex[i];
	}
	if (!ret) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		rc->n = (size_t)argc;
		ret = gm_p2p_seed(t, (size_t)argc, c, status_path, &stop_seeding, on_ready, rc, err);
	}
	for (i = 0; i < argc; i++) {
		gm_repo_close(repos[i]);
		free(names[i]);
	}
	if (status_path)
		unlink(status_path);
	free(t);
	free(repos);
	free(hex);
	free(names);
	return ret;
}

/* --create-only: the torrents noted, their magnet links printed. */
static int create_torrents(int argc, const char **argv, int verbosity)
{
	gm_error err = GM_ERROR_INIT;
	int i, ret = 0;

	for (i = 0; i < argc && !ret; i++) {
		gm_repo *r = NULL;
		gm_buf t = GM_BUF_INIT;
		char hex[GM_REPO_OID_HEXLEN + 1], *magnet = NULL;
		int created = 0;
		if (!(ret = gm_repo_open_spec(argv[i], &r, hex, &err)) &&
		    !(ret = gm_p2p_torrent(r, hex, 1, &t, &created, &err)) &&
		    !(ret = gm_p2p_magnet(r, hex, &magnet, &err)) && verbosity >= 0)
			printf("%s %s\n", argv[i], magnet);
		if (ret)
			gm_error_prefix(&err, "%s", argv[i]);
		free(magnet);
		gm_buf_release(&t);
		gm_repo_close(r);
	}
	return ret ? gm_cmd_error(&err) : 0;
}

int cmd_seed(int argc, const char **argv)
{
	int verbosity = 0, status, n, daemon_mode = 0, show = 0, stop = 0, create_only = 0;
	long port = -1;
	const char *limit = NULL;
	const struct gm_option options[] = {
		GM_OPT_FLAG(0, "daemon", &daemon_mode, "seed in the background (stop with --stop or kill)"),
		GM_OPT_STRING(0, "upload-limit", &limit, "rate", "bytes per second, k/m/g suffixes (model.p2p.uploadLimit)"),
		GM_OPT_INT(0, "port", &port, "n", "listen port (model.p2p.port; default any)", 0, 65535),
		GM_OPT_FLAG(0, "status", &show, "list the running seeders: torrents, peers, rates, ratio"),
		GM_OPT_FLAG(0, "stop", &stop, "stop the running seeders"),
		GM_OPT_FLAG(0, "create-only", &create_only, "make and note the torrents, print their magnet links, "
			    "do not seed"),
		GM_OPT_VERBOSITY(&verbosity),
		GM_OPT_END()
	};
	const struct gm_cmd_info cmd = { "git model seed", "git-model", seed_usage, options };
	gm_error err = GM_ERROR_INIT;
	gm_p2p_config c;
	gm_buf path = GM_BUF_INIT;
	struct ready_ctx rc = { -1, 0, 0 };
	char *dir = NULL;

	n = gm_cmd_parse(&cmd, argc, argv, 0, 0, &status);
	if (n < 0)
		return status;
	gm_cmd_set_verbosity(verbosity);
	if (show || stop) {
		if (n)
			return gm_cmd_usage_error(&cmd, "--status and --stop take no <name>");
		if (!(dir = seeds_dir(&err)))
			return gm_cmd_error(&err);
		if (!each_seeder(dir, show ? print_status : stop_one) && verbosity >= 0)
			printf("no seeder is running\n");
		free(dir);
		return 0;
	}
	if (!n)
		return gm_cmd_usage_error(&cmd, "missing <name>[@<rev>]: a registered model (see 'git model list')");
	if (create_only)
		return create_torrents(n, argv, verbosity);
	if (gm_p2p_config_load(NULL, &c, &err))
		return gm_cmd_error(&err);
	if (port >= 0)
		c.port = (int)port;
	if (limit && gm_p2p_parse_rate(limit, &c.upload_limit, &err)) {
		gm_p2p_config_release(&c);
		return gm_cmd_usage_error(&cmd, "%s", err.msg);
	}
	if (!(dir = seeds_dir(&err))) {
		gm_p2p_config_release(&c);
		return gm_cmd_error(&err);
	}
	rc.quiet = verbosity < 0;
	if (daemon_mode) {
		int fds[2];
		pid_t pid;
		if (pipe(fds)) {
			gm_error_errno(&err, "cannot start the seeder");
			status = gm_cmd_error(&err);
			goto out;
		}
		fflush(NULL);
		pid = fork();
		if (pid < 0) {
			gm_error_errno(&err, "cannot start the seeder");
			status = gm_cmd_error(&err);
			goto out;
		}
		if (pid == 0) {
			int null = open("/dev/null", O_RDWR), log;
			gm_buf logp = GM_BUF_INIT;
			close(fds[0]);
			setsid();
			gm_buf_addf(&logp, "%s/%ld.log", dir, (long)getpid());
			log = open(logp.buf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			dup2(null, 0);
			dup2(log >= 0 ? log : null, 1);
			dup2(log >= 0 ? log : null, 2);
			if (null > 2)
				close(null);
			if (log > 2)
				close(log);
			rc.fd = fds[1];
			gm_buf_addf(&path, "%s/%ld.status", dir, (long)getpid());
			status = seed_run(n, argv, &c, path.buf, &rc, &err) ? gm_cmd_error(&err) : 0;
			if (rc.fd >= 0)
				close(rc.fd); /* never ready: the parent reads EOF */
			unlink(logp.buf);
			gm_buf_release(&logp);
			goto out;
		}
		close(fds[1]);
		{
			char line[64];
			ssize_t k = read(fds[0], line, sizeof(line) - 1);
			close(fds[0]);
			if (k <= 0) {
				int ws = 0;
				gm_buf logp = GM_BUF_INIT, text = GM_BUF_INIT;
				waitpid(pid, &ws, 0);
				gm_buf_addf(&logp, "%s/%ld.log", dir, (long)pid);
				if (gm_read_file(logp.buf, &text, NULL) == 0)
					fwrite(text.buf, 1, text.len, stderr);
				unlink(logp.buf);
				gm_buf_release(&logp);
				gm_buf_release(&text);
				fprintf(stderr, "error: the seeder stopped before it was ready\n");
				status = 1;
				goto out;
			}
			line[k] = '\0';
			if (verbosity >= 0)
				printf("seeding %d revision%s on port %d in the background (pid %ld); "
				       "'git model seed --status' shows it\n", n, n == 1 ? "" : "s", atoi(line), (long)pid);
			status = 0;
		}
		goto out;
	}
	gm_buf_addf(&path, "%s/%ld.status", dir, (long)getpid());
	status = seed_run(n, argv, &c, path.buf, &rc, &err) ? gm_cmd_error(&err) : 0;
out:
	gm_buf_release(&path);
	gm_p2p_config_release(&c);
	free(dir);
	return status;
}
