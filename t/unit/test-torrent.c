/*
 * test-torrent.c - storage/torrent.h (making and reading BitTorrent v2
 * torrents) and p2p.h's rate parsing.  The swarm itself is t5000-p2p.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/p2p.h"
#include "storage/torrent.h"
#include "tap.h"

static void write_file(const char *path, size_t n, unsigned seed)
{
	FILE *f = fopen(path, "wb");
	for (size_t i = 0; i < n; i++)
		fputc((int)((i * 2654435761u + seed) >> 13) & 0xff, f);
	fclose(f);
}

int main(void)
{
	gm_error err = GM_ERROR_INIT;
	char dir[] = "/tmp/test-torrent-XXXXXX", a[256], b[256], a2[256], b2[256], sub[256];
	const char *seeds[] = { "http://hub.example/org/m/resolve/" };
	gm_torrent_file f1[2], f2[2];
	gm_torrent_info ti;
	char *t1 = NULL, *t2 = NULL, *t3 = NULL;
	size_t n1 = 0, n2 = 0, n3 = 0;
	long long rate = 0;

	ok(gm_p2p_parse_rate("10m", &rate, &err) == 0 && rate == 10 * 1024 * 1024, "rate 10m");
	ok(gm_p2p_parse_rate("512k", &rate, &err) == 0 && rate == 512 * 1024, "rate 512k");
	ok(gm_p2p_parse_rate("0", &rate, &err) == 0 && rate == 0, "rate 0 (unlimited)");
	ok_error(gm_p2p_parse_rate("fast", &rate, &err), &err, GM_EINVAL, "bad rate 'fast'", "a bad rate is refused");
	ok_error(gm_p2p_parse_rate("3t", &rate, &err), &err, GM_EINVAL, "bad rate", "an unknown suffix is refused");

	if (!gm_torrent_available()) {
		ok_error(gm_torrent_create("x", f1, 0, NULL, 0, &t1, &n1, &err), &err, GM_EUNSUPPORTED,
			 "libtorrent-rasterbar", "without libtorrent: a clear error");
		return tap_done();
	}
	if (!mkdtemp(dir))
		return 1;
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	snprintf(sub, sizeof(sub), "%s/elsewhere", dir);
	snprintf(a2, sizeof(a2), "%s/elsewhere/a", dir);
	snprintf(b2, sizeof(b2), "%s/elsewhere/b", dir);
	mkdir(sub, 0755);
	write_file(a, 100000, 1);
	write_file(b, 40000, 2);
	write_file(a2, 100000, 1);
	write_file(b2, 40000, 2);

	f1[0] = (gm_torrent_file){ "model.safetensors", a, 100000 };
	f1[1] = (gm_torrent_file){ "sub/tokenizer.json", b, 40000 };
	/* the same content elsewhere, listed the other way round */
	f2[0] = (gm_torrent_file){ "sub/tokenizer.json", b2, 40000 };
	f2[1] = (gm_torrent_file){ "model.safetensors", a2, 100000 };
	ok(gm_torrent_create("0123abcd", f1, 2, seeds, 1, &t1, &n1, &err) == 0, "make a torrent");
	ok(gm_torrent_create("0123abcd", f2, 2, seeds, 1, &t2, &n2, &err) == 0, "make it again from copies");
	ok(n1 && n1 == n2 && !memcmp(t1, t2, n1), "same files, same torrent, byte for byte");

	ok(gm_torrent_parse(t1, n1, &ti, &err) == 0, "parse it");
	ok(!strcmp(ti.name, "0123abcd"), "name is the root directory");
	ok(ti.n_files == 2 && !strcmp(ti.paths[0], "model.safetensors") && !strcmp(ti.paths[1], "sub/tokenizer.json"),
	   "files sorted by path, relative to the root");
	ok(ti.sizes[0] == 100000 && ti.sizes[1] == 40000 && ti.total == 140000, "sizes");
	ok(strlen(ti.infohash) == 64 && !strncmp(ti.magnet, "magnet:?xt=urn:btmh:1220", 24) &&
	   !strncmp(ti.magnet + 24, ti.infohash, 64), "magnet link with the v2 info-hash: %s", ti.magnet);
	ok(ti.n_web_seeds == 1 && !strcmp(ti.web_seeds[0], seeds[0]), "web seed in url-list");
	ok(ti.piece_size >= 16384 && (ti.piece_size & (ti.piece_size - 1)) == 0, "piece size a power of two");
	{
		char first[65];
		snprintf(first, sizeof(first), "%s", ti.infohash);
		gm_torrent_info_release(&ti);
		/* one byte changes the info-hash */
		write_file(b2, 40000, 3);
		ok(gm_torrent_create("0123abcd", f2, 2, seeds, 1, &t3, &n3, &err) == 0 &&
		   gm_torrent_parse(t3, n3, &ti, &err) == 0 && strcmp(ti.infohash, first), "other bytes, other torrent");
		gm_torrent_info_release(&ti);
	}
	/* no scratch directory left behind */
	{
		char cmd[512];
		snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s | grep -v '^a$' | grep -v '^b$' | grep -v '^elsewhere$')\"",
			 dir);
		ok(system(cmd) == 0, "hashing leaves nothing behind");
	}
	{
		gm_torrent_file bad = { "../x", a, 100000 }, empty = { "e", a, 0 };
		char *t = NULL;
		size_t n = 0;
		ok_error(gm_torrent_create("r", &bad, 1, NULL, 0, &t, &n, &err), &err, GM_EINVAL, "bad path",
			 "a path out of the torrent is refused");
		ok_error(gm_torrent_create("r", &empty, 1, NULL, 0, &t, &n, &err), &err, GM_EINVAL, "empty",
			 "an empty file is refused");
		ok_error(gm_torrent_create("a/b", f1, 2, NULL, 0, &t, &n, &err), &err, GM_EINVAL, "bad torrent name",
			 "a name with / is refused");
		ok_error(gm_torrent_parse("d4:infoe", 8, &ti, &err), &err, GM_EFORMAT, "not a torrent",
			 "garbage is not a torrent");
	}
	free(t1);
	free(t2);
	free(t3);
	unlink(a);
	unlink(b);
	unlink(a2);
	unlink(b2);
	rmdir(sub);
	rmdir(dir);
	return tap_done();
}
