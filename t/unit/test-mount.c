/* test-mount.c - the path and mountinfo checks of git-model-mount. */
#include <limits.h>
#include <string.h>

#include "mount-check.h"
#include "tap.h"

static int refused(const char *path)
{
	const char *why = NULL;

	return gmm_check_path_chars(path, &why) == -1 && why != NULL;
}

int main(void)
{
	char line[512], big[PATH_MAX + 10], marker[32];
	struct gmm_mountinfo mi;
	const char *why;

	ok(gmm_check_path_chars("/home/u/models/m@exp", &why) == 0, "a plain path is accepted");
	ok(gmm_check_path_chars("/home/u/trash directory.t8002/m", &why) == 0, "spaces are accepted");
	ok(refused("relative/path"), "a relative path is refused");
	ok(refused(""), "an empty path is refused");
	ok(refused("/a,lowerdir=/etc"), "',' is refused (option injection)");
	ok(refused("/a:b"), "':' is refused (lowerdir separator)");
	ok(refused("/a=b"), "'=' is refused");
	ok(refused("/a\\054b"), "'\\' is refused (escapes)");
	ok(refused("/a\nb"), "a newline is refused");
	ok(refused("/a\tb"), "a control character is refused");
	ok(refused("/a/../etc"), "a '..' component is refused");
	ok(refused("/a/./b"), "a '.' component is refused");
	ok(refused("/a//b"), "'//' is refused");
	ok(refused("/a/.."), "a trailing '..' is refused");
	ok(gmm_check_path_chars("/a/..b/.c", &why) == 0, "names starting with dots are fine");
	memset(big, 'a', sizeof(big) - 1);
	big[0] = '/';
	big[sizeof(big) - 1] = 0;
	ok(refused(big), "a path longer than PATH_MAX is refused");

	ok(gmm_path_within("/m/a", "/m/a"), "an area contains itself");
	ok(gmm_path_within("/m/a", "/m/a/b/c"), "an area contains what is below it");
	ok(!gmm_path_within("/m/a", "/m/ab"), "/m/ab is not below /m/a");
	ok(!gmm_path_within("/m/a", "/m"), "the parent is not in the area");
	ok(gmm_path_within("/m/a/", "/m/a/x"), "a trailing slash on the area is ignored");
	ok(gmm_path_within("/", "/x"), "/ contains everything");

	strcpy(line, "36 35 0:45 / /tmp/trash\\040directory.t/wt rw,nosuid,nodev shared:1 - overlay "
	       "git-model-mount-1000 rw,lowerdir=/proc/self/fd/4\n");
	ok(gmm_parse_mountinfo(line, &mi) == 0, "a mountinfo line parses");
	ok(mi.id == 36, "its mount id");
	ok(!strcmp(mi.mount_point, "/tmp/trash directory.t/wt"), "its mount point, unescaped");
	ok(!strcmp(mi.fstype, "overlay"), "its type");
	ok(!strcmp(mi.source, "git-model-mount-1000"), "its source");
	strcpy(line, "22 1 8:1 / / rw - ext4 /dev/vda rw\n");
	ok(gmm_parse_mountinfo(line, &mi) == 0 && !strcmp(mi.fstype, "ext4") && !strcmp(mi.mount_point, "/"),
	   "a line without optional fields");
	strcpy(line, "22 1 8:1 / /x rw shared:1\n");
	ok(gmm_parse_mountinfo(line, &mi) == -1, "a line without the separator is refused");
	strcpy(line, "x 1 8:1 / /x rw - ext4 /dev/vda rw\n");
	ok(gmm_parse_mountinfo(line, &mi) == -1, "a bad mount id is refused");

	gmm_marker(1000, marker, sizeof(marker));
	ok(!strcmp(marker, "git-model-mount-1000"), "the marker names the uid");
	return tap_done();
}
