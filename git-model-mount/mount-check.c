/* mount-check.c - pure checks of git-model-mount (see mount-check.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mount-check.h"

int gmm_check_path_chars(const char *path, const char **why)
{
	const char *p;

	if (!path || path[0] != '/') {
		*why = "not an absolute path";
		return -1;
	}
	if (strlen(path) >= PATH_MAX) {
		*why = "too long";
		return -1;
	}
	for (p = path; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == ',' || c == ':' || c == '=' || c == '\\') {
			*why = "contains ',' ':' '=' or '\\', which overlayfs would read as option syntax";
			return -1;
		}
		if (c < 0x20 || c == 0x7f) {
			*why = "contains a newline or another control character";
			return -1;
		}
		if (c == '/' && (p[1] == '/' || (p[1] == '.' && (p[2] == '/' || !p[2])) ||
				 (p[1] == '.' && p[2] == '.' && (p[3] == '/' || !p[3])))) {
			*why = "is not normalized (\"//\", \".\" or \"..\" component)";
			return -1;
		}
	}
	return 0;
}

int gmm_path_within(const char *area, const char *path)
{
	size_t n = strlen(area);

	if (n > 1 && area[n - 1] == '/')
		n--;
	if (!strcmp(area, "/"))
		return path[0] == '/';
	return !strncmp(area, path, n) && (path[n] == 0 || path[n] == '/');
}

static void unescape(char *s)
{
	char *w = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
		    s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*w++ = *s++;
		}
	}
	*w = 0;
}

int gmm_parse_mountinfo(char *line, struct gmm_mountinfo *out)
{
	char *save = NULL, *tok, *fields[5];
	int n = 0;
	char *end;

	for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		fields[n++] = tok;
		if (n == 5)
			break;
	}
	if (n < 5)
		return -1;
	out->id = strtoul(fields[0], &end, 10);
	if (*end)
		return -1;
	unescape(fields[4]);
	out->mount_point = fields[4];
	/* Optional fields, then "-", then type and source. */
	while ((tok = strtok_r(NULL, " \n", &save)) && strcmp(tok, "-"))
		;
	if (!tok || !(out->fstype = strtok_r(NULL, " \n", &save)) || !(out->source = strtok_r(NULL, " \n", &save)))
		return -1;
	unescape(out->fstype);
	unescape(out->source);
	return 0;
}

void gmm_marker(unsigned long uid, char *buf, size_t size)
{
	snprintf(buf, size, GMM_MARKER_PREFIX "%lu", uid);
}
