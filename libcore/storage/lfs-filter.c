/*
 * lfs-filter.c - the "lfs" filter: in-process for libgit2, and git's
 * long-running filter-process protocol for stock git, and the
 * single-shot smudge.  See lfs-filter.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <git2.h>
#include <git2/sys/filter.h>

#include "base/buf.h"
#include "base/fs.h"
#include "storage/libgit.h"
#include "storage/lfs.h"
#include "storage/lfs-filter.h"
#include "storage/lfs-repo.h"

/* ------------------------------------------------------------ pkt-lines */

#define PKT_MAX_DATA 65516

struct pkt_io {
	int in, out;
	gm_error *err;
};

/* Reads n bytes; 0, 1 at EOF before the first byte, or an error. */
static int read_full(int fd, void *buf, size_t n, gm_error *err)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return gm_error_errno(err, "filter-process: cannot read from git");
		if (r == 0) {
			if (got == 0)
				return 1;
			return gm_error_set(err, GM_EFORMAT, "filter-process: git closed the pipe in the middle "
					    "of a packet");
		}
		got += (size_t)r;
	}
	return 0;
}

/*
 * Reads one pkt-line into data (PKT_MAX_DATA + 1 bytes).  Returns 0 with
 * *len set (a flush packet is *flush = 1), 1 at EOF, or an error.
 */
static int pkt_read(struct pkt_io *io, char *data, size_t *len, int *flush)
{
	char hdr[5];
	unsigned long n;
	char *end;
	int ret = read_full(io->in, hdr, 4, io->err);

	*flush = 0;
	*len = 0;
	if (ret)
		return ret;
	hdr[4] = '\0';
	if (strspn(hdr, "0123456789abcdef") != 4)
		return gm_error_set(io->err, GM_EFORMAT, "filter-process: bad pkt-line header '%.4s' "
				    "(is git talking to us?)", hdr);
	n = strtoul(hdr, &end, 16);
	if (n == 0) {
		*flush = 1;
		return 0;
	}
	if (n < 4 || n - 4 > PKT_MAX_DATA)
		return gm_error_set(io->err, GM_EFORMAT, "filter-process: invalid pkt-line length %lu", n);
	ret = read_full(io->in, data, n - 4, io->err);
	if (ret == 1)
		return gm_error_set(io->err, GM_EFORMAT, "filter-process: git closed the pipe in the middle "
				    "of a packet");
	if (ret)
		return ret;
	*len = n - 4;
	data[*len] = '\0';
	return 0;
}

static int pkt_write(struct pkt_io *io, const void *data, size_t len)
{
	char hdr[5];

	while (len) {
		size_t n = len > PKT_MAX_DATA ? PKT_MAX_DATA : len;
		snprintf(hdr, sizeof(hdr), "%04zx", n + 4);
		if (gm_write_all(io->out, hdr, 4) < 0 || gm_write_all(io->out, data, n) < 0)
			return gm_error_errno(io->err, "filter-process: cannot write to git");
		data = (const char *)data + n;
		len -= n;
	}
	return 0;
}

static int pkt_line(struct pkt_io *io, const char *text)
{
	return pkt_write(io, text, strlen(text));
}

static int pkt_flush(struct pkt_io *io)
{
	if (gm_write_all(io->out, "0000", 4) < 0)
		return gm_error_errno(io->err, "filter-process: cannot write to git");
	return 0;
}

/* A text packet without its trailing newline. */
static const char *chomp(char *data, size_t len)
{
	if (len && data[len - 1] == '\n')
		data[len - 1] = '\0';
	return data;
}

/* ------------------------------------------------------------ filter-process */

static int handshake(struct pkt_io *io, char *data)
{
	size_t len;
	int flush, ret, v2 = 0, clean = 0, smudge = 0;

	ret = pkt_read(io, data, &len, &flush);
	if (ret == 1)
		return gm_error_set(io->err, GM_EFORMAT, "filter-process: no handshake: this command is run by git "
				    "(filter.lfs.process), not by hand");
	if (ret)
		return ret;
	if (flush || strcmp(chomp(data, len), "git-filter-client"))
		return gm_error_set(io->err, GM_EFORMAT, "filter-process: expected 'git-filter-client', got '%.40s'",
				    flush ? "flush" : data);
	for (;;) {
		ret = pkt_read(io, data, &len, &flush);
		if (ret == 1)
			return gm_error_set(io->err, GM_EFORMAT, "filter-process: EOF in the handshake");
		if (ret)
			return ret;
		if (flush)
			break;
		if (!strcmp(chomp(data, len), "version=2"))
			v2 = 1;
	}
	if (!v2)
		return gm_error_set(io->err, GM_EFORMAT, "filter-process: git does not offer protocol version 2");
	if ((ret = pkt_line(io, "git-filter-server\n")) || (ret = pkt_line(io, "version=2\n")) ||
	    (ret = pkt_flush(io)))
		return ret;
	for (;;) {
		ret = pkt_read(io, data, &len, &flush);
		if (ret == 1)
			return gm_error_set(io->err, GM_EFORMAT, "filter-process: EOF in the capabilities");
		if (ret)
			return ret;
		if (flush)
			break;
		chomp(data, len);
		if (!strcmp(data, "capability=clean"))
			clean = 1;
		else if (!strcmp(data, "capability=smudge"))
			smudge = 1;
	}
	if ((clean && (ret = pkt_line(io, "capability=clean\n"))) ||
	    (smudge && (ret = pkt_line(io, "capability=smudge\n"))) || (ret = pkt_flush(io)))
		return ret;
	return 0;
}

/*
 * gm_lfs_smudge, and when the object is missing, gm_lfs_fetch_one then
 * smudge again: what the filters run for stock git do (as git-lfs's).
 */
static int smudge_fetch(const gm_lfs_store *s, const void *data, size_t len, const char *path,
			gm_lfs_sink_fn sink, void *ctx, gm_error *err)
{
	gm_lfs_pointer p;
	gm_error ferr = GM_ERROR_INIT;
	int ret = gm_lfs_smudge(s, data, len, path, sink, ctx, err);

	/* GM_ENOENT comes before any content is written. */
	if (ret != GM_ENOENT || gm_lfs_pointer_parse(data, len, &p, NULL))
		return ret;
	if (gm_lfs_fetch_one(s, p.oid, p.size, path, &ferr)) {
		ret = gm_error_set(err, GM_ENOENT, "%s%sLFS object %s (%llu bytes) is not in %s and could not be "
				   "downloaded: %s", path ? path : "", path ? ": " : "", p.oid, p.size, s->objects,
				   ferr.msg);
		gm_lfs_pointer_release(&p);
		return ret;
	}
	gm_lfs_pointer_release(&p);
	return gm_lfs_smudge(s, data, len, path, sink, ctx, err);
}

/* The smudge sink: announces success before the first byte of content. */
struct smudge_out {
	struct pkt_io *io;
	int started;
};

static int smudge_sink(void *ctx, const void *data, size_t len, gm_error *err)
{
	struct smudge_out *o = ctx;
	int ret;

	if (!o->started) {
		o->started = 1;
		if ((ret = pkt_line(o->io, "status=success\n")) || (ret = pkt_flush(o->io)))
			return ret;
	}
	return pkt_write(o->io, data, len);
}

/*
 * Answers one request whose header has been read.  Protocol errors are
 * returned; a failure of this file alone is reported and answered with
 * status=error (return 0).
 */
static int one_request(const gm_lfs_store *s, struct pkt_io *io, char *data, const char *command,
		       const char *path, gm_lfs_report_fn report, void *ctx)
{
	gm_error ferr = GM_ERROR_INIT;
	gm_lfs_cleaner *cleaner = NULL;
	gm_buf in = GM_BUF_INIT, ptr = GM_BUF_INIT;
	int is_clean = !strcmp(command, "clean"), is_smudge = !strcmp(command, "smudge");
	int ret = 0, failed = 0, flush;
	size_t len;

	if (!is_clean && !is_smudge)
		failed = gm_error_set(&ferr, GM_EINVAL, "unknown filter command '%.40s'", command);
	else if (is_clean && gm_lfs_clean_begin(s, &cleaner, &ferr))
		failed = 1;
	/* Read the whole content before answering, as the protocol requires. */
	for (;;) {
		ret = pkt_read(io, data, &len, &flush);
		if (ret == 1)
			ret = gm_error_set(io->err, GM_EFORMAT, "filter-process: EOF in the content of '%s'", path);
		if (ret)
			goto out;
		if (flush)
			break;
		if (failed)
			continue;
		if (cleaner) {
			if (gm_lfs_clean_write(cleaner, data, len, &ferr))
				failed = 1;
		} else {
			gm_buf_add(&in, data, len);
		}
	}
	if (!failed && cleaner) {
		gm_lfs_pointer p;
		failed = gm_lfs_clean_finish(cleaner, &p, &ferr) != 0;
		cleaner = NULL;
		if (!failed) {
			/* git-lfs cleans an empty file to an empty blob, not a pointer. */
			if (p.size > 0 || p.n_ext)
				gm_lfs_pointer_format(&p, &ptr);
			gm_lfs_pointer_release(&p);
			if ((ret = pkt_line(io, "status=success\n")) || (ret = pkt_flush(io)) ||
			    (ret = pkt_write(io, ptr.buf, ptr.len)) || (ret = pkt_flush(io)) || (ret = pkt_flush(io)))
				goto out;
		}
	} else if (!failed && is_smudge) {
		struct smudge_out o = { io, 0 };
		int r;

		if (gm_lfs_skip_smudge())
			r = in.len ? smudge_sink(&o, in.buf, in.len, &ferr) : 0;
		else
			r = smudge_fetch(s, in.buf, in.len, NULL, smudge_sink, &o, &ferr);
		if (r && o.started) {
			/* Content went out already: end it and take the status back. */
			if (report)
				report(ctx, path, &ferr);
			if ((ret = pkt_flush(io)) || (ret = pkt_line(io, "status=error\n")) || (ret = pkt_flush(io)))
				goto out;
			goto out;
		}
		if (r) {
			failed = 1;
		} else {
			if (!o.started && ((ret = pkt_line(io, "status=success\n")) || (ret = pkt_flush(io))))
				goto out;
			if ((ret = pkt_flush(io)) || (ret = pkt_flush(io)))
				goto out;
		}
	}
	if (failed) {
		if (report)
			report(ctx, path, &ferr);
		if ((ret = pkt_line(io, "status=error\n")) || (ret = pkt_flush(io)))
			goto out;
	}
out:
	gm_lfs_clean_abort(cleaner);
	gm_buf_release(&in);
	gm_buf_release(&ptr);
	return ret;
}

int gm_lfs_filter_process(const gm_lfs_store *s, int in_fd, int out_fd, gm_lfs_report_fn report, void *ctx,
			  gm_error *err)
{
	struct pkt_io io = { in_fd, out_fd, err };
	char *data = gm_xmalloc(PKT_MAX_DATA + 1), *command = NULL, *path = NULL;
	size_t len;
	int ret, flush, first;

	ret = handshake(&io, data);
	while (!ret) {
		free(command);
		free(path);
		command = path = NULL;
		first = 1;
		for (;;) {
			ret = pkt_read(&io, data, &len, &flush);
			if (ret == 1 && first) {
				ret = 0; /* git is done */
				goto out;
			}
			if (ret == 1)
				ret = gm_error_set(err, GM_EFORMAT, "filter-process: EOF in a request header");
			if (ret)
				goto out;
			if (flush)
				break;
			first = 0;
			chomp(data, len);
			if (!strncmp(data, "command=", 8)) {
				free(command);
				command = gm_xstrdup(data + 8);
			} else if (!strncmp(data, "pathname=", 9)) {
				free(path);
				path = gm_xstrdup(data + 9);
			}
		}
		if (!command) {
			ret = gm_error_set(err, GM_EFORMAT, "filter-process: a request without 'command='");
			break;
		}
		ret = one_request(s, &io, data, command, path ? path : "(no pathname)", report, ctx);
	}
out:
	free(command);
	free(path);
	free(data);
	return ret;
}

/* ------------------------------------------------------------ libgit2 filter */

/*
 * One filtering in progress: clean streams into a cleaner; smudge
 * collects the (small) pointer and streams the object out on close.
 */
struct lfs_stream {
	git_writestream parent;
	git_writestream *next;
	gm_lfs_store store;
	gm_lfs_cleaner *cleaner;
	gm_buf in;
	char *path;
	int smudge;
};

static int set_git_error(const gm_error *e)
{
	git_error_set_str(GIT_ERROR_FILTER, e->msg);
	return -1;
}

static int stream_write(git_writestream *w, const char *buf, size_t len)
{
	struct lfs_stream *st = (struct lfs_stream *)w;
	gm_error err = GM_ERROR_INIT;

	if (st->smudge) {
		gm_buf_add(&st->in, buf, len);
		return 0;
	}
	if (gm_lfs_clean_write(st->cleaner, buf, len, &err))
		return set_git_error(&err);
	return 0;
}

static int next_sink(void *ctx, const void *data, size_t len, gm_error *err)
{
	git_writestream *next = ctx;

	if (next->write(next, data, len) < 0) {
		const git_error *e = git_error_last();
		return gm_error_set(err, GM_EIO, "%s", e && e->message ? e->message : "cannot write the checkout");
	}
	return 0;
}

static int stream_close(git_writestream *w)
{
	struct lfs_stream *st = (struct lfs_stream *)w;
	gm_error err = GM_ERROR_INIT;
	gm_lfs_pointer p;
	gm_buf out = GM_BUF_INIT;
	int ret;

	if (st->smudge) {
		ret = gm_lfs_smudge(&st->store, st->in.buf, st->in.len, st->path, next_sink, st->next, &err);
	} else {
		ret = gm_lfs_clean_finish(st->cleaner, &p, &err);
		st->cleaner = NULL;
		if (!ret) {
			if (p.size > 0 || p.n_ext)
				gm_lfs_pointer_format(&p, &out);
			gm_lfs_pointer_release(&p);
			ret = out.len ? next_sink(st->next, out.buf, out.len, &err) : 0;
		} else {
			gm_error_prefix(&err, "%s", st->path);
		}
	}
	gm_buf_release(&out);
	if (ret) {
		/* The writer downstream must still be closed (libgit2 asserts
		 * it); our message is set after, so that it is the one seen. */
		st->next->close(st->next);
		return set_git_error(&err);
	}
	return st->next->close(st->next);
}

static void stream_free(git_writestream *w)
{
	struct lfs_stream *st = (struct lfs_stream *)w;

	gm_lfs_clean_abort(st->cleaner);
	gm_lfs_store_release(&st->store);
	gm_buf_release(&st->in);
	free(st->path);
	free(st);
}

static int filter_stream(git_writestream **out, git_filter *self, void **payload, const git_filter_source *src,
			 git_writestream *next)
{
	git_repository *repo = git_filter_source_repo(src);
	struct lfs_stream *st = gm_xcalloc(1, sizeof(*st));
	gm_error err = GM_ERROR_INIT;
	const char *path = git_filter_source_path(src);

	st->parent.write = stream_write;
	st->parent.close = stream_close;
	st->parent.free = stream_free;
	st->next = next;
	gm_buf_init(&st->in);
	st->path = gm_xstrdup(path ? path : "(unknown path)");
	st->smudge = git_filter_source_mode(src) == GIT_FILTER_SMUDGE;
	if (gm_lfs_store_init(&st->store, git_repository_commondir(repo), &err) ||
	    (!st->smudge && gm_lfs_clean_begin(&st->store, &st->cleaner, &err))) {
		stream_free(&st->parent);
		return set_git_error(&err);
	}
	*out = &st->parent;
	return 0;
}

static git_filter lfs_filter;
static int lfs_filter_registered;

int gm_lfs_filter_register(gm_error *err)
{
	int ret;

	if (lfs_filter_registered)
		return 0;
	gm_libgit_use(); /* kept: the registration lives as long as the process */
	if (git_filter_lookup("lfs")) {
		lfs_filter_registered = 1;
		return 0;
	}
	git_filter_init(&lfs_filter, GIT_FILTER_VERSION);
	lfs_filter.attributes = "filter=lfs";
	lfs_filter.stream = filter_stream;
	ret = git_filter_register("lfs", &lfs_filter, GIT_FILTER_DRIVER_PRIORITY);
	if (ret < 0)
		return gm_libgit_fail(err, GM_ERROR, "cannot register the lfs filter with libgit2");
	lfs_filter_registered = 1;
	return 0;
}

/* ------------------------------------------------------------ the single-shot smudge filter */

int gm_lfs_skip_smudge(void)
{
	const char *e = getenv("GIT_LFS_SKIP_SMUDGE");

	return e && (!strcmp(e, "1") || !strcasecmp(e, "true"));
}

int gm_lfs_smudge_fd(const gm_lfs_store *s, int in_fd, int out_fd, const char *path, int skip, gm_error *err)
{
	char head[GM_LFS_POINTER_MAX], *chunk;
	size_t len = 0;
	ssize_t n;
	int ret;

	/* Up to 1024 bytes decide whether this is a pointer. */
	while (len < sizeof(head)) {
		n = read(in_fd, head + len, sizeof(head) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return gm_error_errno(err, "cannot read the content to smudge");
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len < sizeof(head)) {
		if (skip)
			return gm_lfs_sink_fd(&out_fd, head, len, err);
		return smudge_fetch(s, head, len, path, gm_lfs_sink_fd, &out_fd, err);
	}
	/* Too large for a pointer: copy it through. */
	ret = gm_lfs_sink_fd(&out_fd, head, len, err);
	chunk = gm_xmalloc(1 << 20);
	while (!ret) {
		n = read(in_fd, chunk, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			ret = gm_error_errno(err, "cannot read the content to smudge");
		if (n <= 0)
			break;
		ret = gm_lfs_sink_fd(&out_fd, chunk, (size_t)n, err);
	}
	free(chunk);
	return ret;
}
