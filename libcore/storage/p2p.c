/*
 * p2p.c - a model revision's LFS objects over BitTorrent: the torrent as a
 * git note, seeding from the store, downloading into it.  See p2p.h.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <git2.h>
#include <openssl/evp.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/log.h"
#include "storage/hub.h"
#include "storage/lfs-repo.h"
#include "storage/libgit.h"
#include "storage/p2p.h"
#include "storage/torrent.h"

#define NOTE_MAGIC "git-model torrent v1"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ configuration */

int gm_p2p_parse_rate(const char *s, long long *out, gm_error *err)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return gm_error_set(err, GM_EINVAL, "bad rate '%s' (bytes per second, e.g. 500k or 10m)", s);
	switch (*end) {
	case 'k': case 'K': v *= 1024; end++; break;
	case 'm': case 'M': v *= 1024 * 1024; end++; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > 2e9)
		return gm_error_set(err, GM_EINVAL, "bad rate '%s' (bytes per second, e.g. 500k or 10m, at most 2g)",
				    s);
	*out = (long long)v;
	return 0;
}

static int add_tracker(const git_config_entry *e, void *payload)
{
	gm_p2p_config *c = payload;

	if (!e->value || !*e->value)
		return 0;
	c->trackers = gm_xrealloc(c->trackers, (c->n_trackers + 2) * sizeof(char *));
	c->trackers[c->n_trackers++] = gm_xstrdup(e->value);
	c->trackers[c->n_trackers] = NULL;
	return 0;
}

int gm_p2p_config_load(const char *repo_path, gm_p2p_config *c, gm_error *err)
{
	git_repository *repo = NULL;
	git_config *cfg = NULL, *snap = NULL;
	git_buf b = { 0 };
	int v, ret = 0;
	int32_t n;

	memset(c, 0, sizeof(*c));
	c->lsd = 1;
	c->webseed = 1;
	c->timeout = 30;
	if ((ret = gm_repo_global_init(err)))
		return ret;
	if (repo_path && git_repository_open(&repo, repo_path) == 0) {
		if (git_repository_config_snapshot(&snap, repo) < 0)
			ret = gm_libgit_error(err, GM_EIO, "cannot read the git configuration of %s", repo_path);
	} else if (git_config_open_default(&cfg) < 0 || git_config_snapshot(&snap, cfg) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read the git configuration");
	}
	if (ret)
		goto out;
	if (git_config_get_bool(&v, snap, "model.p2p") == 0)
		c->enabled = v;
	git_config_get_multivar_foreach(snap, "model.p2p.tracker", NULL, add_tracker, c);
	if (git_config_get_bool(&v, snap, "model.p2p.lsd") == 0)
		c->lsd = v;
	if (git_config_get_bool(&v, snap, "model.p2p.dht") == 0)
		c->dht = v;
	if (git_config_get_bool(&v, snap, "model.p2p.webseed") == 0)
		c->webseed = v;
	if (git_config_get_string_buf(&b, snap, "model.p2p.listen") == 0 && b.size)
		c->listen = gm_xstrdup(b.ptr);
	git_buf_dispose(&b);
	if (git_config_get_int32(&n, snap, "model.p2p.port") == 0)
		c->port = n;
	if (git_config_get_int32(&n, snap, "model.p2p.timeout") == 0 && n > 0)
		c->timeout = n;
	if (git_config_get_string_buf(&b, snap, "model.p2p.uploadLimit") == 0)
		ret = gm_p2p_parse_rate(b.ptr, &c->upload_limit, err);
	git_buf_dispose(&b);
	if (!ret && git_config_get_string_buf(&b, snap, "model.p2p.downloadLimit") == 0)
		ret = gm_p2p_parse_rate(b.ptr, &c->download_limit, err);
	git_buf_dispose(&b);
	if (ret)
		gm_error_prefix(err, "git config model.p2p.*");
out:
	git_config_free(snap);
	git_config_free(cfg);
	git_repository_free(repo);
	if (ret)
		gm_p2p_config_release(c);
	return ret;
}

void gm_p2p_config_release(gm_p2p_config *c)
{
	for (size_t i = 0; i < c->n_trackers; i++)
		free(c->trackers[i]);
	free(c->trackers);
	free(c->listen);
	memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------ the note */

/* NOTE_MAGIC, the magnet link, a blank line, the torrent in base64 (76
 * characters a line). */
static void note_format(const char *magnet, const unsigned char *t, size_t len, gm_buf *out)
{
	unsigned char line[80];

	gm_buf_addf(out, "%s\n%s\n\n", NOTE_MAGIC, magnet);
	for (size_t off = 0; off < len; off += 57) {
		size_t n = len - off < 57 ? len - off : 57;
		int k = EVP_EncodeBlock(line, t + off, (int)n);
		gm_buf_add(out, line, (size_t)k);
		gm_buf_addch(out, '\n');
	}
}

static int note_parse(const char *text, size_t len, gm_buf *torrent, char **magnet, gm_error *err)
{
	const char *p = text, *end = text + len, *nl;
	unsigned char dec[64];

	if (len < strlen(NOTE_MAGIC) + 1 || memcmp(text, NOTE_MAGIC "\n", strlen(NOTE_MAGIC) + 1))
		return gm_error_set(err, GM_EFORMAT, "the note is not a git-model torrent (no '%s' line)", NOTE_MAGIC);
	p += strlen(NOTE_MAGIC) + 1;
	nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl || nl + 1 >= end || nl[1] != '\n')
		return gm_error_set(err, GM_EFORMAT, "the torrent note has no magnet line");
	if (magnet) {
		*magnet = gm_xmalloc((size_t)(nl - p) + 1);
		memcpy(*magnet, p, (size_t)(nl - p));
		(*magnet)[nl - p] = '\0';
	}
	for (p = nl + 2; p < end; p = nl + 1) {
		size_t n;
		int k, pad = 0;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		n = (size_t)(nl - p);
		if (!n)
			continue;
		if (n % 4 || n > 76)
			goto bad;
		k = EVP_DecodeBlock(dec, (const unsigned char *)p, (int)n);
		if (k < 0)
			goto bad;
		/* EVP_DecodeBlock counts the "=" padding as zero bytes */
		if (p[n - 1] == '=')
			pad++;
		if (p[n - 2] == '=')
			pad++;
		if (pad && nl < end && nl + 1 < end)
			goto bad; /* padding only on the last line */
		gm_buf_add(torrent, dec, (size_t)(k - pad));
		if (nl == end)
			break;
	}
	return 0;
bad:
	if (magnet) {
		free(*magnet);
		*magnet = NULL;
	}
	return gm_error_set(err, GM_EFORMAT, "the torrent note's base64 is damaged");
}

/* The note of commit hex in ref (text, *out), or GM_ENOENT. */
static int note_read(git_repository *git, const char *ref, const char *hex, gm_buf *out, gm_error *err)
{
	git_oid id;
	git_note *note = NULL;
	git_blob *blob = NULL;
	int ret = 0;

	if (git_oid_fromstr(&id, hex) < 0)
		return gm_error_set(err, GM_EINVAL, "bad commit id %s", hex);
	if (git_note_read(&note, git, ref, &id) < 0)
		return gm_error_set(err, GM_ENOENT, "commit %.12s has no torrent (no note in %s); 'git model seed' "
				    "makes one", hex, ref);
	/* the blob itself: git_note_message stops at a NUL */
	if (git_blob_lookup(&blob, git, git_note_id(note)) < 0)
		ret = gm_libgit_error(err, GM_EIO, "cannot read the torrent note of %.12s", hex);
	else
		gm_buf_add(out, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
	git_blob_free(blob);
	git_note_free(note);
	return ret;
}

static int signature(git_repository *git, git_signature **sig)
{
	if (git_signature_default(sig, git) == 0)
		return 0;
	return git_signature_now(sig, "git-model", "git-model@localhost");
}

/* ENDPOINT/ORG/NAME/resolve/ when origin is a repository of the Hub (the
 * endpoint of now): the web seed for the revision's files.  NULL else. */
static char *hub_web_seed(git_repository *git)
{
	git_remote *origin = NULL;
	char *endpoint = gm_hub_endpoint(), *ret = NULL;
	const char *url, *rest, *slash;
	size_t n;

	if (git_remote_lookup(&origin, git, "origin") < 0)
		goto out;
	url = git_remote_url(origin);
	n = strlen(endpoint);
	if (!url || strncmp(url, endpoint, n) || url[n] != '/')
		goto out;
	rest = url + n + 1;
	slash = strchr(rest, '/');
	if (!slash || slash == rest || !slash[1])
		goto out;
	{
		gm_buf b = GM_BUF_INIT;
		size_t len = strlen(rest);
		while (len && rest[len - 1] == '/')
			len--;
		if (len > 4 && !memcmp(rest + len - 4, ".git", 4))
			len -= 4;
		if (memchr(slash + 1, '/', len - (size_t)(slash + 1 - rest)))
			goto out;
		gm_buf_addf(&b, "%s/%.*s/resolve/", endpoint, (int)len, rest);
		ret = gm_buf_detach(&b, NULL);
	}
out:
	git_remote_free(origin);
	free(endpoint);
	return ret;
}

/* Makes commit hex's torrent from the objects in the store and notes it. */
static int torrent_make(gm_repo *r, const char *hex, gm_buf *out, gm_error *err)
{
	git_repository *git = gm_repo_git(r);
	const gm_lfs_store *store = gm_repo_lfs(r);
	gm_lfs_object_list list = { 0 };
	gm_torrent_file *files = NULL;
	char **disk = NULL, *seed = NULL, *magnet = NULL;
	gm_buf t = GM_BUF_INIT, note = GM_BUF_INIT;
	gm_torrent_info ti;
	git_signature *sig = NULL;
	git_oid commit, note_id;
	size_t n = 0, i;
	int ret;

	memset(&ti, 0, sizeof(ti));
	if ((ret = gm_lfs_scan_tree(gm_repo_workdir(r), hex, NULL, NULL, &list, err)))
		goto out;
	files = gm_xcalloc(list.n + 1, sizeof(*files));
	disk = gm_xcalloc(list.n + 1, sizeof(*disk));
	for (i = 0; i < list.n; i++) {
		gm_lfs_object *o = &list.items[i];
		if (!o->size)
			continue; /* git-lfs stores nothing for empty files */
		if (!gm_lfs_store_has(store, o->oid, o->size)) {
			ret = gm_error_set(err, GM_ENOENT, "%s (%s) of %.12s is not in the store: fetch the revision "
					   "(git model fetch) before seeding it", o->path ? o->path : "?", o->oid, hex);
			goto out;
		}
		disk[n] = gm_lfs_object_path(store, o->oid);
		files[n].path = o->path;
		files[n].disk = disk[n];
		files[n].size = o->size;
		n++;
	}
	if (!n) {
		ret = gm_error_set(err, GM_EINVAL, "commit %.12s has no LFS objects: nothing to share", hex);
		goto out;
	}
	seed = hub_web_seed(git);
	{
		char *bytes;
		size_t len;
		if ((ret = gm_torrent_create(hex, files, n, (const char *const *)&seed, seed ? 1 : 0, &bytes, &len,
					     err)))
			goto out;
		gm_buf_add(&t, bytes, len);
		free(bytes);
	}
	if ((ret = gm_torrent_parse(t.buf, t.len, &ti, err)))
		goto out;
	note_format(ti.magnet, (const unsigned char *)t.buf, t.len, &note);
	git_oid_fromstr(&commit, hex);
	if (signature(git, &sig) < 0 ||
	    git_note_create(&note_id, git, GM_P2P_NOTES_REF, sig, sig, &commit, note.buf, 1) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot write the torrent note of %.12s", hex);
		goto out;
	}
	gm_buf_add(out, t.buf, t.len);
out:
	git_signature_free(sig);
	gm_torrent_info_release(&ti);
	for (i = 0; disk && i < n; i++)
		free(disk[i]);
	free(disk);
	free(files);
	free(seed);
	free(magnet);
	gm_buf_release(&t);
	gm_buf_release(&note);
	gm_lfs_object_list_release(&list);
	return ret;
}

int gm_p2p_torrent(gm_repo *r, const char *hex, int create, gm_buf *out, int *created, gm_error *err)
{
	gm_buf note = GM_BUF_INIT;
	int ret;

	if (created)
		*created = 0;
	ret = note_read(gm_repo_git(r), GM_P2P_NOTES_REF, hex, &note, err);
	if (!ret)
		ret = note_parse(note.buf, note.len, out, NULL, err);
	gm_buf_release(&note);
	if (ret == GM_ENOENT && create) {
		gm_error_clear(err);
		ret = torrent_make(r, hex, out, err);
		if (!ret && created)
			*created = 1;
	}
	return ret;
}

int gm_p2p_magnet(gm_repo *r, const char *hex, char **out, gm_error *err)
{
	gm_buf note = GM_BUF_INIT, t = GM_BUF_INIT;
	int ret;

	*out = NULL;
	ret = note_read(gm_repo_git(r), GM_P2P_NOTES_REF, hex, &note, err);
	if (!ret)
		ret = note_parse(note.buf, note.len, &t, out, err);
	gm_buf_release(&note);
	gm_buf_release(&t);
	return ret;
}

/* ------------------------------------------------------------ notes merge */

struct merge_ctx {
	git_repository *git;
	git_commit *theirs;    /* the fetched notes commit */
	git_oid tip;           /* the merged notes commit so far */
	git_signature *sig;
	int changed;
	int ret;
	gm_error *err;
};

static int merge_one(const git_oid *blob_id, const git_oid *annotated, void *payload)
{
	struct merge_ctx *m = payload;
	git_note *have = NULL;
	git_blob *blob = NULL;
	git_commit *tip = NULL;
	git_oid new_commit, new_blob;
	gm_buf text = GM_BUF_INIT;

	if (git_note_commit_read(&have, m->git, m->theirs, annotated) == 0) {
		git_note_free(have);
		return 0; /* both have one: theirs stays (same torrent) */
	}
	if (git_blob_lookup(&blob, m->git, blob_id) < 0 || git_commit_lookup(&tip, m->git, &m->tip) < 0) {
		m->ret = gm_libgit_error(m->err, GM_EIO, "cannot read the torrent notes");
		goto out;
	}
	gm_buf_add(&text, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
	if (git_note_commit_create(&new_commit, &new_blob, m->git, tip, m->sig, m->sig, annotated, text.buf, 0) < 0) {
		m->ret = gm_libgit_error(m->err, GM_EIO, "cannot merge the torrent notes");
		goto out;
	}
	m->tip = new_commit;
	m->changed = 1;
out:
	gm_buf_release(&text);
	git_commit_free(tip);
	git_blob_free(blob);
	return m->ret ? -1 : 0;
}

int gm_p2p_notes_merge(gm_repo *r, gm_error *err)
{
	git_repository *git = gm_repo_git(r);
	git_oid ours, theirs;
	git_reference *ref = NULL;
	struct merge_ctx m;
	int ret = 0, have_ours;

	memset(&m, 0, sizeof(m));
	if (git_reference_name_to_id(&theirs, git, GM_P2P_NOTES_TRACKING) < 0)
		return 0;
	have_ours = git_reference_name_to_id(&ours, git, GM_P2P_NOTES_REF) == 0;
	if (have_ours && (!git_oid_cmp(&ours, &theirs) || git_graph_descendant_of(git, &ours, &theirs) == 1))
		return 0; /* nothing new */
	if (!have_ours || git_graph_descendant_of(git, &theirs, &ours) == 1) {
		if (git_reference_create(&ref, git, GM_P2P_NOTES_REF, &theirs, 1, "git model: notes fast-forward") < 0)
			ret = gm_libgit_error(err, GM_EIO, "cannot update %s", GM_P2P_NOTES_REF);
		git_reference_free(ref);
		return ret;
	}
	/* diverged: ours on top of theirs */
	m.git = git;
	m.tip = theirs;
	m.err = err;
	if (git_commit_lookup(&m.theirs, git, &theirs) < 0 || signature(git, &m.sig) < 0) {
		ret = gm_libgit_error(err, GM_EIO, "cannot read %s", GM_P2P_NOTES_TRACKING);
		goto out;
	}
	if (git_note_foreach(git, GM_P2P_NOTES_REF, merge_one, &m) < 0 && !m.ret)
		m.ret = gm_libgit_error(err, GM_EIO, "cannot read %s", GM_P2P_NOTES_REF);
	if ((ret = m.ret))
		goto out;
	if (git_reference_create(&ref, git, GM_P2P_NOTES_REF, &m.tip, 1, "git model: notes merged") < 0)
		ret = gm_libgit_error(err, GM_EIO, "cannot update %s", GM_P2P_NOTES_REF);
out:
	git_reference_free(ref);
	git_commit_free(m.theirs);
	git_signature_free(m.sig);
	return ret;
}

/* ------------------------------------------------------------ sessions */

static int session_open(const gm_p2p_config *c, int port, gm_torrent_session **s, gm_error *err)
{
	gm_torrent_session_opts o;

	memset(&o, 0, sizeof(o));
	o.listen = c->listen;
	o.port = port;
	o.trackers = (const char *const *)c->trackers;
	o.n_trackers = c->n_trackers;
	o.lsd = c->lsd;
	o.dht = c->dht;
	o.upload_limit = c->upload_limit;
	o.download_limit = c->download_limit;
	return gm_torrent_session_new(&o, s, err);
}

static void draw(const gm_torrent_stat *ts, size_t n_done, size_t n, double el, int final)
{
	gm_buf line = GM_BUF_INIT;
	double rate = el > 0 ? (double)(ts->from_peers + ts->from_web) / el : 0;

	gm_buf_addf(&line, "Downloading LFS objects (P2P): %zu/%zu, ", n_done, n);
	gm_buf_add_human_bytes(&line, ts->wanted_done);
	gm_buf_adds(&line, " / ");
	gm_buf_add_human_bytes(&line, ts->wanted);
	gm_buf_adds(&line, ", ");
	gm_buf_add_human_bytes(&line, (unsigned long long)rate);
	gm_buf_addf(&line, "/s, %d peer%s, %d web seed%s", ts->peers, ts->peers == 1 ? "" : "s", ts->web_seeds,
		    ts->web_seeds == 1 ? "" : "s");
	fprintf(stderr, "\r%-100.160s%s", line.buf, final ? "\n" : "");
	fflush(stderr);
	gm_buf_release(&line);
}

int gm_p2p_fetch(gm_repo *r, const char *hex, const gm_lfs_object_list *list, const gm_p2p_config *c,
		 int progress, gm_p2p_fetch_stats *st, gm_error *err)
{
	const gm_lfs_store *store = gm_repo_lfs(r);
	gm_buf t = GM_BUF_INIT, dir = GM_BUF_INIT;
	gm_torrent_info ti;
	gm_torrent_session *s = NULL;
	gm_torrent_add_opts ao;
	gm_torrent_stat ts;
	char **disk = NULL, **oids = NULL, *seed = NULL;
	unsigned char *want = NULL, *stored = NULL;
	double start = now(), last_move, last_draw = 0;
	unsigned long long last_bytes = 0;
	size_t i, j, n_done = 0;
	int ret, id = -1, checked = 0;

	memset(st, 0, sizeof(*st));
	memset(&ti, 0, sizeof(ti));
	memset(&ts, 0, sizeof(ts));
	if (!gm_torrent_available())
		return gm_error_set(err, GM_EUNSUPPORTED, "peer-to-peer transfers are not available: git-model was "
				    "built without libtorrent-rasterbar");
	if ((ret = gm_p2p_torrent(r, hex, 0, &t, NULL, err)) || (ret = gm_torrent_parse(t.buf, t.len, &ti, err)))
		goto out;
	/* each file of the torrent is one of the revision's objects: which,
	 * is known from the tree (path -> oid), never from the torrent */
	{
		gm_lfs_object_list all = { 0 };
		if ((ret = gm_lfs_scan_tree(gm_repo_workdir(r), hex, NULL, NULL, &all, err)))
			goto out;
		oids = gm_xcalloc(ti.n_files + 1, sizeof(*oids));
		disk = gm_xcalloc(ti.n_files + 1, sizeof(*disk));
		want = gm_xcalloc(ti.n_files + 1, 1);
		stored = gm_xcalloc(ti.n_files + 1, 1);
		gm_buf_addf(&dir, "%s/p2p-%.16s", store->tmp, ti.infohash);
		for (i = 0; i < ti.n_files; i++) {
			for (j = 0; j < all.n; j++)
				if (all.items[j].path && !strcmp(all.items[j].path, ti.paths[i]))
					break;
			if (j == all.n || all.items[j].size != ti.sizes[i]) {
				ret = gm_error_set(err, GM_EFORMAT, "the torrent of %.12s does not match its tree (%s)",
						   hex, ti.paths[i]);
				gm_lfs_object_list_release(&all);
				goto out;
			}
			oids[i] = gm_xstrdup(all.items[j].oid);
			{
				gm_buf p = GM_BUF_INIT;
				gm_buf_addf(&p, "%s/%s", dir.buf, oids[i]);
				disk[i] = gm_buf_detach(&p, NULL);
			}
			for (j = 0; j < list->n; j++)
				if (!strcmp(list->items[j].oid, oids[i]))
					break;
			want[i] = j < list->n && !gm_lfs_store_has(store, oids[i], ti.sizes[i]);
			for (j = 0; j < i && want[i]; j++)
				if (want[j] && !strcmp(oids[j], oids[i]))
					want[i] = 0; /* the same object under two paths: once */
			if (want[i]) {
				st->n_wanted++;
				st->bytes_wanted += ti.sizes[i];
			}
		}
		gm_lfs_object_list_release(&all);
	}
	if (!st->n_wanted)
		goto out;
	if ((ret = gm_mkdir_p(dir.buf, 0755, err)) || (ret = session_open(c, 0, &s, err)))
		goto out;
	memset(&ao, 0, sizeof(ao));
	ao.data = t.buf;
	ao.len = t.len;
	ao.disk = (const char *const *)disk;
	ao.want = want;
	/* the Hub as it is reached from here now, rather than as it was when
	 * the note was written (the torrent's own seeds are kept when there is
	 * no Hub origin) */
	seed = c->webseed ? hub_web_seed(gm_repo_git(r)) : NULL;
	ao.no_web_seeds = !c->webseed;
	if (seed) {
		ao.web_seeds = (const char *const *)&seed;
		ao.n_web_seeds = 1;
		ao.no_web_seeds = 1;
	}
	if ((ret = gm_torrent_session_add(s, &ao, &id, err)))
		goto out;
	gm_info("P2P: torrent %.16s of %.12s, %zu objects (%llu bytes) wanted, %zu tracker%s%s%s", ti.infohash, hex,
		st->n_wanted, st->bytes_wanted, c->n_trackers, c->n_trackers == 1 ? "" : "s", c->lsd ? ", LSD" : "",
		seed ? ", Hub web seed" : "");
	last_move = now();
	for (;;) {
		gm_torrent_session_poll(s, 200);
		if ((ret = gm_torrent_session_stat(s, id, &ts, err)))
			goto out;
		if (ts.state == GM_TORRENT_FAILED) {
			gm_warn("P2P: %s", ts.error);
			break;
		}
		if (ts.state == GM_TORRENT_CHECKING)
			last_move = now();
		else if (!checked) {
			/* what an interrupted run left is counted once checked */
			checked = 1;
			st->resumed = ts.wanted_done;
		}
		if (ts.from_peers + ts.from_web + ts.wanted_done != last_bytes) {
			last_bytes = ts.from_peers + ts.from_web + ts.wanted_done;
			last_move = now();
		}
		n_done = 0;
		for (i = 0; i < ti.n_files; i++)
			if (want[i] && gm_torrent_session_file_done(s, id, i))
				n_done++;
		if (progress && (now() - last_draw > 0.2)) {
			draw(&ts, n_done, st->n_wanted, now() - start, 0);
			last_draw = now();
		}
		if (checked && (ts.state == GM_TORRENT_FINISHED || ts.state == GM_TORRENT_SEEDING ||
				n_done == st->n_wanted))
			break;
		if (now() - last_move > c->timeout) {
			gm_warn("P2P: no progress for %d s (%d peers, %d web seeds): giving up on the swarm", c->timeout,
				ts.peers, ts.web_seeds);
			break;
		}
	}
	if (progress)
		draw(&ts, n_done, st->n_wanted, now() - start, 1);
	st->from_peers = ts.from_peers;
	st->from_web = ts.from_web;
	st->banned = ts.banned;
	for (i = 0; i < ti.n_files; i++)
		stored[i] = want[i] && gm_torrent_session_file_done(s, id, i);
	/* the engine closes the files before they move */
	ret = gm_torrent_session_remove(s, id, err);
	id = -1;
	if (ret)
		goto out;
	for (i = 0; i < ti.n_files; i++) {
		gm_error e = GM_ERROR_INIT;
		if (!stored[i])
			continue;
		/* the engine checked every block against the torrent; the store
		 * takes nothing that does not hash to the oid the tree names */
		if (gm_lfs_store_import(store, disk[i], oids[i], ti.sizes[i], &e)) {
			gm_warn("P2P: %s: %s", ti.paths[i], e.msg);
			st->n_rejected++;
		} else {
			st->n_stored++;
		}
		unlink(disk[i]);
	}
	if (st->n_stored == st->n_wanted)
		rmdir(dir.buf);
out:
	if (s && id >= 0) {
		gm_error e = GM_ERROR_INIT;
		gm_torrent_session_remove(s, id, &e);
	}
	gm_torrent_session_free(s);
	st->seconds = now() - start;
	for (i = 0; i < ti.n_files; i++) {
		if (disk)
			free(disk[i]);
		if (oids)
			free(oids[i]);
	}
	free(disk);
	free(oids);
	free(want);
	free(stored);
	free(seed);
	gm_torrent_info_release(&ti);
	gm_buf_release(&t);
	gm_buf_release(&dir);
	return ret;
}

void gm_p2p_prefetch(gm_repo *r, const char *hex, const char *const *include, const char *const *exclude,
		     int ask, int progress)
{
	gm_p2p_config c;
	gm_p2p_fetch_stats st;
	gm_lfs_object_list list = { 0 };
	gm_error err = GM_ERROR_INIT;

	if (gm_p2p_config_load(gm_repo_workdir(r), &c, &err)) {
		gm_warn("P2P: %s", err.msg);
		return;
	}
	if (!ask && !c.enabled)
		goto out;
	if (!gm_torrent_available()) {
		gm_warn("P2P is not available (git-model was built without libtorrent-rasterbar): "
			"using the plain LFS transfer");
		goto out;
	}
	if (gm_lfs_scan_tree(gm_repo_workdir(r), hex, include, exclude, &list, &err) ||
	    gm_p2p_fetch(r, hex, &list, &c, progress, &st, &err)) {
		gm_warn("P2P: %s; using the plain LFS transfer", err.msg);
		goto out;
	}
	if (st.n_wanted)
		gm_info("P2P: %zu of %zu objects from the swarm (%llu bytes from peers, %llu from web seeds, "
			"%llu resumed, %d peers banned) in %.1f s%s", st.n_stored, st.n_wanted, st.from_peers,
			st.from_web, st.resumed, st.banned, st.seconds,
			st.n_stored < st.n_wanted ? "; the plain LFS transfer gets the rest" : "");
out:
	gm_lfs_object_list_release(&list);
	gm_p2p_config_release(&c);
}

/* ------------------------------------------------------------ seeding */

static const char *state_name(enum gm_torrent_state s)
{
	switch (s) {
	case GM_TORRENT_CHECKING: return "checking";
	case GM_TORRENT_DOWNLOADING: return "downloading";
	case GM_TORRENT_FINISHED: return "finished";
	case GM_TORRENT_SEEDING: return "seeding";
	default: return "failed";
	}
}

int gm_p2p_seed(const gm_p2p_seed_target *targets, size_t n, const gm_p2p_config *c, const char *status_path,
		volatile sig_atomic_t *stop, void (*ready)(void *ctx, int port), void *ctx, gm_error *err)
{
	gm_torrent_session *s = NULL;
	int *ids = gm_xcalloc(n + 1, sizeof(int));
	double last = 0;
	int ret = 0;
	size_t i;

	if (!gm_torrent_available()) {
		ret = gm_error_set(err, GM_EUNSUPPORTED, "peer-to-peer transfers are not available: git-model was "
				   "built without libtorrent-rasterbar (install libtorrent-rasterbar-dev and "
				   "configure again)");
		goto out;
	}
	if ((ret = session_open(c, c->port, &s, err)))
		goto out;
	for (i = 0; i < n; i++) {
		gm_buf t = GM_BUF_INIT;
		gm_torrent_info ti;
		gm_torrent_add_opts ao;
		char **disk = NULL;
		size_t k, j;
		int created;

		memset(&ti, 0, sizeof(ti));
		if ((ret = gm_p2p_torrent(targets[i].repo, targets[i].hex, 1, &t, &created, err)) ||
		    (ret = gm_torrent_parse(t.buf, t.len, &ti, err))) {
			gm_error_prefix(err, "%s", targets[i].name);
			gm_buf_release(&t);
			goto out;
		}
		if (created)
			gm_info("made the torrent of %s@%.12s and noted it in %s", targets[i].name, targets[i].hex,
				GM_P2P_NOTES_REF);
		/* the store's files are the torrent's storage: nothing is copied */
		{
			gm_lfs_object_list all = { 0 };
			const gm_lfs_store *store = gm_repo_lfs(targets[i].repo);
			if ((ret = gm_lfs_scan_tree(gm_repo_workdir(targets[i].repo), targets[i].hex, NULL, NULL, &all,
						    err)) == 0) {
				disk = gm_xcalloc(ti.n_files + 1, sizeof(*disk));
				for (k = 0; k < ti.n_files && !ret; k++) {
					for (j = 0; j < all.n; j++)
						if (all.items[j].path && !strcmp(all.items[j].path, ti.paths[k]))
							break;
					if (j == all.n || !gm_lfs_store_has(store, all.items[j].oid, ti.sizes[k]))
						ret = gm_error_set(err, GM_ENOENT, "%s: %s@%.12s is not all in the store: "
								   "fetch it first", ti.paths[k], targets[i].name,
								   targets[i].hex);
					else
						disk[k] = gm_lfs_object_path(store, all.items[j].oid);
				}
			}
			gm_lfs_object_list_release(&all);
		}
		if (!ret) {
			memset(&ao, 0, sizeof(ao));
			ao.data = t.buf;
			ao.len = t.len;
			ao.disk = (const char *const *)disk;
			ao.seed = 1;
			ao.no_web_seeds = 1; /* a seeder needs nothing */
			ret = gm_torrent_session_add(s, &ao, &ids[i], err);
		}
		if (!ret)
			gm_info("seeding %s@%.12s: %s", targets[i].name, targets[i].hex, ti.magnet);
		for (k = 0; disk && k < ti.n_files; k++)
			free(disk[k]);
		free(disk);
		gm_torrent_info_release(&ti);
		gm_buf_release(&t);
		if (ret)
			goto out;
	}
	for (i = 0; i < 50 && !gm_torrent_session_port(s); i++)
		gm_torrent_session_poll(s, 100);
	if (ready)
		ready(ctx, gm_torrent_session_port(s));
	while (!*stop) {
		gm_torrent_session_poll(s, 250);
		if (!status_path || now() - last < 1)
			continue;
		last = now();
		{
			gm_buf b = GM_BUF_INIT;
			gm_error e = GM_ERROR_INIT;
			gm_buf_addf(&b, "pid %ld port %d\n", (long)getpid(), gm_torrent_session_port(s));
			for (i = 0; i < n; i++) {
				gm_torrent_stat ts;
				if (gm_torrent_session_stat(s, ids[i], &ts, &e))
					continue;
				gm_buf_addf(&b, "%s@%.12s %s %s have=%llu/%llu peers=%d down=%d up=%d uploaded=%llu "
					    "ratio=%.2f banned=%d%s%s\n", targets[i].name, targets[i].hex, ts.infohash,
					    state_name(ts.state), ts.wanted_done, ts.wanted, ts.peers, ts.download_rate,
					    ts.upload_rate, ts.uploaded,
					    ts.wanted ? (double)ts.uploaded / (double)ts.wanted : 0.0, ts.banned,
					    ts.error[0] ? " error=" : "", ts.error);
			}
			if (gm_write_file_atomic(status_path, b.buf, b.len, 0644, &e))
				gm_debug("seed status: %s", e.msg);
			gm_buf_release(&b);
		}
	}
out:
	gm_torrent_session_free(s);
	free(ids);
	return ret;
}
