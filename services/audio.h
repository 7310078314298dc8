/* audio.h - any audio file as a stream of 16 kHz mono signed 16-bit samples.
 *
 * The conversion runs in an `ffmpeg` child process (started with
 * posix_spawnp, no shell; $SLUICE_FFMPEG names another binary), which
 * writes raw s16le samples to a pipe that sl_audio_read() drains in
 * caller-sized blocks, so a file of any length is never held in memory.
 * Whatever ffmpeg decodes works: wav, mp3, ogg/vorbis, flac, m4a/aac,
 * opus, and the audio track of a video. The path is handed to ffmpeg as
 * `file:PATH`, so it is never taken for a URL or an option.
 *
 * One sl_audio belongs to one thread. Error codes (error.h): -SL_EINVAL
 * for input ffmpeg cannot decode (a corrupt or unsupported file), with
 * ffmpeg's exit status and the first line of its stderr in err; -SL_EIO
 * when ffmpeg cannot be started or the pipe fails; -SL_ENOMEM.
 */
#ifndef SL_AUDIO_H
#define SL_AUDIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SL_AUDIO_RATE 16000 /* samples per second of the decoded stream */

typedef struct sl_audio sl_audio;

/* The duration of the file's first audio stream in milliseconds as
 * `ffprobe` reports it ($SLUICE_FFPROBE names another binary), or -1 when
 * it cannot tell (no ffprobe, an undecodable file, a stream without a
 * duration). For progress only: never fails. */
int64_t sl_audio_probe_ms(const char *path);

/* Starts decoding `path`. On success *out is a new stream the caller
 * closes with sl_audio_close(). Returns 0, or -SL_EIO / -SL_ENOMEM with a
 * message in err. A file ffmpeg cannot read is only reported by
 * sl_audio_read() or sl_audio_close(), once ffmpeg has said so. */
int sl_audio_open(const char *path, sl_audio **out, char *err, size_t errlen);

/* Reads up to n samples into buf (OUT). Returns the number read (> 0),
 * 0 at the end of a stream that decoded cleanly, or a negative code:
 * -SL_EINVAL when ffmpeg failed (corrupt or unsupported input; err holds
 * "ffmpeg exited with status N: <first line of its stderr>"), -SL_EIO when
 * the pipe failed. */
ssize_t sl_audio_read(sl_audio *a, int16_t *buf, size_t n, char *err,
                      size_t errlen);

/* What ffmpeg complained about on a stream that still ended cleanly
 * (decoding errors it skipped over): its first two different lines,
 * without file names and addresses, joined by "; ", in buf (OUT). Returns
 * the length, 0 when it said nothing. Meaningful once sl_audio_read()
 * returned 0. */
size_t sl_audio_complaints(const sl_audio *a, char *buf, size_t len);

/* Samples delivered so far. */
int64_t sl_audio_samples(const sl_audio *a);

/* Ends the stream: a child still running (the caller stopped early) is
 * killed; frees everything. NULL is fine. */
void sl_audio_close(sl_audio *a);

#endif
