/* asr.h - offline speech recognition with pocketsphinx.
 *
 * An sl_asr is one pocketsphinx decoder with its acoustic model, language
 * model and dictionary loaded (about half a second and ~100 MB with the
 * Debian en-us model): create one per thread and reuse it for every file.
 * sl_asr_transcribe_file() streams the file through ffmpeg (audio.h),
 * cuts the audio into utterances at pauses (a run of low-energy 10 ms
 * frames, at most max_utterance_ms each), decodes them one at a time and
 * returns the result in the shape AssemblyAI's transcript has, so that a
 * later stage cannot tell which provider ran:
 *
 *   {"transcript": "Our invoices are slow. ...",
 *    "words": [{"text": "our", "start": 410, "end": 620,
 *               "confidence": 0.93}, ...],               (milliseconds)
 *    "utterances": [{"speaker": "A", "text": "...", "start": 410,
 *                    "end": 2730, "confidence": 0.88, "words": [...]}],
 *    "audio_duration": 12.3,                              (seconds)
 *    "provider": "pocketsphinx"}
 *
 * Memory stays flat whatever the length: samples are read in small
 * blocks and only the current utterance is held (at most
 * max_utterance_ms of samples, ~1 MB for 30 s, allocated once) and
 * decoded as a whole, with its own cepstral mean; the result grows with
 * the number of words only. The same file gives the same transcript
 * whatever the decoder heard before. The transcript gets a full
 * stop at each pause and a capital letter after it: punctuation is
 * guessed from pauses, not recognised.
 */
#ifndef SL_ASR_H
#define SL_ASR_H

#include <jansson.h>
#include <stddef.h>

typedef struct sl_asr sl_asr;

typedef struct sl_asr_opts {
    /* Model files; NULL picks $SLUICE_ASR_MODEL or
     * /usr/share/pocketsphinx/model/en-us for model_dir, and under it the
     * acoustic model "en-us", "en-us.lm.bin" and "cmudict-en-us.dict". */
    const char *model_dir;
    const char *hmm;
    const char *lm;
    const char *dict;
    int max_utterance_ms; /* 0: 30000; an utterance is cut here at the
                             latest (at a short pause after 2/3 of it) */
    int pause_ms;         /* 0: 200; a pause this long ends an utterance */
} sl_asr_opts;

/* Called while decoding. progress gets 0..100 (by time decoded against
 * the duration ffprobe reports; the detail says "decoding 40% (1:12 of
 * 3:00)"); should_stop returning non-zero abandons the file. Any member
 * may be NULL. */
typedef struct sl_asr_cb {
    void (*progress)(void *user, int pct, const char *detail);
    int (*should_stop)(void *user);
    void *user;
} sl_asr_cb;

/* Loads the models. Returns 0 with *out set (the caller frees it with
 * sl_asr_free), or -SL_EINVAL (a model file is missing or unreadable) /
 * -SL_ENOMEM with a message in err. Thread-safe; pocketsphinx's own log
 * output is silenced. */
int sl_asr_new(const sl_asr_opts *o, sl_asr **out, char *err, size_t errlen);

/* Transcribes the audio file at path. Returns 0 with *out (OUT) a new JSON
 * object as above (caller decrefs), or:
 *   -SL_EINVAL  the file is corrupt, unsupported or holds no audio (err:
 *               "ffmpeg exited with status 1: <its first stderr line>" or
 *               "no audio decoded");
 *   -SL_EIO     ffmpeg could not be started or a pipe failed;
 *   -SL_ESTOP   should_stop asked to stop;
 *   -SL_ENOMEM.
 * One sl_asr decodes one file at a time. */
int sl_asr_transcribe_file(sl_asr *a, const char *path, const sl_asr_cb *cb,
                           json_t **out, char *err, size_t errlen);

/* Frees the decoder. NULL is fine. */
void sl_asr_free(sl_asr *a);

#endif
