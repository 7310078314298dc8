/* audio.c - decoding through an ffmpeg child process (see audio.h).
 *
 * Why a child process and not libav* directly: ffmpeg is one Debian
 * package that reads every format we promise, a crash or a hostile file
 * cannot take the worker down with it, and its memory is its own. Both of
 * its output pipes are polled together, so an ffmpeg that writes a lot to
 * stderr can never block while we wait on stdout.
 */
#include "audio.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"

extern char **environ;

#define STDERR_KEEP 1024 /* bytes of ffmpeg's stderr kept for messages */

struct sl_audio {
    pid_t pid;
    int out_fd; /* ffmpeg's stdout: s16le samples */
    int err_fd; /* ffmpeg's stderr, -1 once at EOF */
    int done;   /* the child has been reaped */
    int eof;    /* stdout reached EOF */
    int status; /* wait status once done */
    unsigned char carry; /* odd byte of a sample split across reads */
    int has_carry;
    int64_t samples;
    char errtext[STDERR_KEEP];
    size_t errlen;
    char *url; /* "file:PATH" as ffmpeg was given it */
};

/* Starts argv[0] (searched on PATH) with stdin on /dev/null, stdout on a
 * new pipe (*out_fd, OUT) and stderr on another pipe (*err_fd, OUT) or on
 * /dev/null when err_fd is NULL. Returns 0 or -SL_EIO. */
static int spawn(char *const argv[], pid_t *pid, int *out_fd, int *err_fd,
                 char *err, size_t errlen) {
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    int rc = -SL_EIO, e;
    if (pipe2(po, O_CLOEXEC) != 0 || (err_fd && pipe2(pe, O_CLOEXEC) != 0)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out_pipes;
    }
    if ((e = posix_spawn_file_actions_init(&fa)) != 0) {
        snprintf(err, errlen, "posix_spawn: %s", strerror(e));
        goto out_pipes;
    }
    if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY,
                                              0)) != 0 ||
        (e = posix_spawn_file_actions_adddup2(&fa, po[1], 1)) != 0 ||
        (e = err_fd ? posix_spawn_file_actions_adddup2(&fa, pe[1], 2)
                    : posix_spawn_file_actions_addopen(&fa, 2, "/dev/null",
                                                       O_WRONLY, 0)) != 0) {
        snprintf(err, errlen, "posix_spawn: %s", strerror(e));
        goto out_actions;
    }
    e = posix_spawnp(pid, argv[0], &fa, NULL, argv, environ);
    if (e != 0) {
        snprintf(err, errlen, "cannot start %s: %s", argv[0], strerror(e));
        goto out_actions;
    }
    *out_fd = po[0];
    po[0] = -1;
    if (err_fd) {
        *err_fd = pe[0];
        pe[0] = -1;
    }
    rc = 0;
out_actions:
    posix_spawn_file_actions_destroy(&fa);
out_pipes:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0) close(po[i]);
        if (pe[i] >= 0) close(pe[i]);
    }
    return rc;
}

static const char *tool(const char *env, const char *dflt) {
    const char *v = getenv(env);
    return v && *v ? v : dflt;
}

/* "file:" + path, malloc'd. */
static char *file_url(const char *path) {
    size_t n = strlen(path) + 6;
    char *s = malloc(n);
    if (s) snprintf(s, n, "file:%s", path);
    return s;
}

int64_t sl_audio_probe_ms(const char *path) {
    char *url = file_url(path);
    if (!url) return -1;
    char *argv[] = {(char *)tool("SLUICE_FFPROBE", "ffprobe"),
                    "-v", "error", "-show_entries", "format=duration",
                    "-of", "default=noprint_wrappers=1:nokey=1", url, NULL};
    char err[256], out[128];
    size_t len = 0;
    pid_t pid;
    int fd, status;
    int64_t ms = -1;
    if (spawn(argv, &pid, &fd, NULL, err, sizeof err) != 0) goto out;
    for (;;) {
        ssize_t r = read(fd, out + len, sizeof out - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
        if (len == sizeof out - 1) break;
    }
    out[len] = '\0';
    close(fd);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        char *end;
        double s = strtod(out, &end);
        if (end != out && s > 0 && s < 1e9) ms = (int64_t)(s * 1000.0 + 0.5);
    }
out:
    free(url);
    return ms;
}

int sl_audio_open(const char *path, sl_audio **out, char *err,
                  size_t errlen) {
    *out = NULL;
    sl_audio *a = calloc(1, sizeof *a);
    char *url = file_url(path);
    int rc = -SL_ENOMEM;
    if (!a || !url) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* The first audio stream only, down-mixed and resampled by ffmpeg to
     * what the recogniser expects. */
    char *argv[] = {(char *)tool("SLUICE_FFMPEG", "ffmpeg"),
                    "-nostdin", "-hide_banner", "-nostats",
                    "-loglevel", "error", "-i", url,
                    "-map", "0:a:0", "-vn", "-sn", "-dn",
                    "-ac", "1", "-ar", "16000",
                    "-acodec", "pcm_s16le", "-f", "s16le", "pipe:1", NULL};
    a->err_fd = -1;
    a->out_fd = -1;
    rc = spawn(argv, &a->pid, &a->out_fd, &a->err_fd, err, errlen);
    if (rc != 0) goto fail;
    a->url = url;
    *out = a;
    return 0;
fail:
    free(url);
    free(a);
    return rc;
}

/* Appends stderr bytes, keeping the first STDERR_KEEP - 1. */
static void keep_stderr(sl_audio *a, const char *s, size_t n) {
    size_t room = sizeof a->errtext - 1 - a->errlen;
    if (n > room) n = room;
    memcpy(a->errtext + a->errlen, s, n);
    a->errlen += n;
    a->errtext[a->errlen] = '\0';
}

/* Reads what stderr has; returns -1 once it is at EOF (and closes it). */
static int drain_stderr(sl_audio *a) {
    char tmp[4096];
    ssize_t r = read(a->err_fd, tmp, sizeof tmp);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (r <= 0) {
        close(a->err_fd);
        a->err_fd = -1;
        return -1;
    }
    keep_stderr(a, tmp, (size_t)r);
    return 0;
}

/* Finds the first non-empty line of stderr at or after p; *line (OUT) is
 * its start without the prefixes that are noise to the user, *rest (OUT,
 * may be NULL) where the next line starts. Returns the cleaned line's
 * length (0 at the end). */
static size_t next_line(const sl_audio *a, const char *p, const char **line,
                        const char **rest) {
    while (*p == '\n' || *p == '\r' || *p == ' ') p++;
    size_t eol = strcspn(p, "\r\n");
    if (rest) *rest = p + eol;
    /* "file:/tmp/sluice-audio-1a2b3c: Invalid data found when processing
     * input": the name is ours (often a temporary file), the rest is the
     * news. */
    size_t ul = strlen(a->url);
    if (eol > ul + 2 && strncmp(p, a->url, ul) == 0 && p[ul] == ':' &&
        p[ul + 1] == ' ') {
        p += ul + 2;
        eol -= ul + 2;
    }
    /* "[mp3 @ 0x55f3b4c13980] Invalid frame size": the address is noise. */
    if (p[0] == '[') {
        const char *at = strstr(p, " @ 0x"), *close = strchr(p, ']');
        if (at && close && at < close && close + 1 < p + eol &&
            close[1] == ' ') {
            eol -= (size_t)(close + 2 - p);
            p = close + 2;
        }
    }
    *line = p;
    return eol;
}

size_t sl_audio_complaints(const sl_audio *a, char *buf, size_t len) {
    const char *p = a->errtext, *line, *first = NULL;
    size_t n, nfirst = 0, out = 0;
    if (len) buf[0] = '\0';
    for (int k = 0; k < 2 && (n = next_line(a, p, &line, &p)) > 0;) {
        if (first && n == nfirst && strncmp(line, first, n) == 0) continue;
        int w = snprintf(buf + out, len - out, "%s%.*s", k ? "; " : "",
                         (int)(n > 200 ? 200 : n), line);
        if (w < 0 || (size_t)w >= len - out) break;
        out += (size_t)w;
        if (!first) {
            first = line;
            nfirst = n;
        }
        k++;
    }
    return out;
}

/* After stdout's EOF: reads stderr to its end, reaps the child and turns
 * its exit status into 0 or -SL_EINVAL with a message. */
static int finish(sl_audio *a, char *err, size_t errlen) {
    while (a->err_fd >= 0) drain_stderr(a);
    while (!a->done) {
        if (waitpid(a->pid, &a->status, 0) >= 0) a->done = 1;
        else if (errno != EINTR) {
            snprintf(err, errlen, "waitpid: %s", strerror(errno));
            a->done = 1;
            return -SL_EIO;
        }
    }
    if (WIFEXITED(a->status) && WEXITSTATUS(a->status) == 0) return 0;
    /* The first non-empty line of stderr says what was wrong. */
    const char *line;
    size_t n = next_line(a, a->errtext, &line, NULL);
    if (n > 300) n = 300;
    if (WIFEXITED(a->status))
        snprintf(err, errlen, "ffmpeg exited with status %d: %.*s",
                 WEXITSTATUS(a->status), (int)n,
                 n ? line : "(no message)");
    else
        snprintf(err, errlen, "ffmpeg was killed by signal %d: %.*s",
                 WTERMSIG(a->status), (int)n, n ? line : "(no message)");
    return -SL_EINVAL;
}

ssize_t sl_audio_read(sl_audio *a, int16_t *buf, size_t n, char *err,
                      size_t errlen) {
    if (n == 0) return 0;
    unsigned char *bytes = (unsigned char *)buf;
    size_t have = 0;
    if (a->has_carry) {
        bytes[0] = a->carry;
        have = 1;
        a->has_carry = 0;
    }
    for (;;) {
        if (a->eof) {
            int rc = finish(a, err, errlen);
            if (rc != 0) return rc;
            return 0;
        }
        struct pollfd p[2] = {{a->out_fd, POLLIN, 0}, {a->err_fd, POLLIN, 0}};
        int np = a->err_fd >= 0 ? 2 : 1;
        if (poll(p, (nfds_t)np, -1) < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -SL_EIO;
        }
        if (np == 2 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            drain_stderr(a);
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t r = read(a->out_fd, bytes + have, n * 2 - have);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            snprintf(err, errlen, "reading from ffmpeg: %s", strerror(errno));
            return -SL_EIO;
        }
        if (r == 0) {
            close(a->out_fd);
            a->out_fd = -1;
            a->eof = 1;
            if (have > 0) break; /* a trailing odd byte is dropped */
            continue;
        }
        have += (size_t)r;
        if (have >= 2) break;
    }
    size_t ns = have / 2;
    if (have % 2) {
        a->carry = bytes[have - 1];
        a->has_carry = 1;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < ns; i++)
        buf[i] = (int16_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8));
#endif
    a->samples += (int64_t)ns;
    return (ssize_t)ns;
}

int64_t sl_audio_samples(const sl_audio *a) { return a->samples; }

void sl_audio_close(sl_audio *a) {
    if (!a) return;
    if (a->out_fd >= 0) close(a->out_fd);
    if (a->err_fd >= 0) close(a->err_fd);
    if (!a->done) {
        /* Still running when the caller stopped early: nobody needs the
         * rest of its output. */
        kill(a->pid, SIGKILL);
        while (waitpid(a->pid, &a->status, 0) < 0 && errno == EINTR) {
        }
    }
    free(a->url);
    free(a);
}
