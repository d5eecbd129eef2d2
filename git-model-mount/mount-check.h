/*
 * mount-check.h - the pure checks of git-model-mount, kept apart from the
 * privileged code so that they can be unit-tested (t/unit/test-mount.c).
 *
 * Nothing here touches the filesystem or needs privileges.
 */
#ifndef GMM_MOUNT_CHECK_H
#define GMM_MOUNT_CHECK_H

#include <stddef.h>

/* The mount source that marks overlays mounted by the helper for a uid:
 * "git-model-mount-UID".  Only mounts carrying the caller's marker may be
 * unmounted by the caller. */
#define GMM_MARKER_PREFIX "git-model-mount-"

/*
 * 0 when path can be handed to overlayfs: absolute, shorter than PATH_MAX,
 * no ',' ':' '=' '\\' (option syntax), no newline or other control
 * character (they corrupt /proc/self/mountinfo and logs), no "." or ".."
 * component and no "//".  Else -1 and *why says what is wrong.
 */
int gmm_check_path_chars(const char *path, const char **why);

/* 1 when path is area itself or below it (component-wise: /a/bc is not
 * below /a/b).  Both must be normalized absolute paths. */
int gmm_path_within(const char *area, const char *path);

/* One line of /proc/self/mountinfo. */
struct gmm_mountinfo {
	unsigned long id;
	char *mount_point; /* unescaped, points into the line */
	char *fstype;
	char *source;
};

/* Parses line in place (fields split and \NNN escapes undone); 0 or -1. */
int gmm_parse_mountinfo(char *line, struct gmm_mountinfo *out);

/* Writes the marker of uid into buf (size >= 32). */
void gmm_marker(unsigned long uid, char *buf, size_t size);

#endif
