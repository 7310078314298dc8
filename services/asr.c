/* asr.c - offline speech recognition: ffmpeg samples -> utterances cut at
 * pauses -> pocketsphinx -> an AssemblyAI-shaped transcript (asr.h).
 *
 * Why our own pause detection rather than pocketsphinx's voice activity
 * detector: with pocketsphinx's silence removal on, the frame numbers of
 * its word segments no longer match the audio's timeline, and word times
 * are part of the output. So the decoder runs with -remove_silence no and
 * is only given speech (plus a little padding), one whole utterance at a
 * time; each utterance's frame 0 is a known sample of the file.
 */
#include "asr.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pocketsphinx.h>
#include <sphinxbase/err.h>

#include "audio.h"
#include "buf.h"
#include "error.h"

#define FRAME 160          /* samples per 10 ms analysis frame */
#define BLOCK (FRAME * 25) /* samples read from ffmpeg at a time (250 ms) */
#define PREROLL 20         /* frames of quiet fed before speech starts */
#define FLOOR_START (-70.0) /* dBFS: the noise floor before we know it */
#define SPEECH_OVER 12.0    /* dB above the floor that counts as speech */
#define SPEECH_MIN (-55.0)  /* dBFS: never speech below this */

struct sl_asr {
    ps_decoder_t *ps;
    logmath_t *lmath; /* borrowed from ps */
    int max_frames;   /* an utterance's longest length, in frames */
    int pause_frames; /* a pause that ends an utterance, in frames */
    int16_t *utt;     /* the current utterance's samples (max_frames +
                         PREROLL frames; about 1 MB for 30 s) */
};

static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

static void quiet(void) { err_set_logfp(NULL); }

static int readable(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

int sl_asr_new(const sl_asr_opts *o, sl_asr **out, char *err,
               size_t errlen) {
    static const sl_asr_opts none;
    char hmm[1024], lm[1024], dict[1024];
    *out = NULL;
    if (!o) o = &none;
    const char *dir = o->model_dir;
    if (!dir || !*dir) dir = getenv("SLUICE_ASR_MODEL");
    if (!dir || !*dir) dir = "/usr/share/pocketsphinx/model/en-us";
    snprintf(hmm, sizeof hmm, "%s/%s", dir, o->hmm ? o->hmm : "en-us");
    snprintf(lm, sizeof lm, "%s/%s", dir, o->lm ? o->lm : "en-us.lm.bin");
    snprintf(dict, sizeof dict, "%s/%s", dir,
             o->dict ? o->dict : "cmudict-en-us.dict");
    /* Absolute names in opts are used as they are. */
    if (o->hmm && o->hmm[0] == '/') snprintf(hmm, sizeof hmm, "%s", o->hmm);
    if (o->lm && o->lm[0] == '/') snprintf(lm, sizeof lm, "%s", o->lm);
    if (o->dict && o->dict[0] == '/')
        snprintf(dict, sizeof dict, "%s", o->dict);
    char mdef[1100];
    snprintf(mdef, sizeof mdef, "%s/mdef", hmm);
    const char *missing = !readable(mdef) ? hmm
                          : !readable(lm) ? lm
                          : !readable(dict) ? dict
                                            : NULL;
    if (missing) {
        snprintf(err, errlen,
                 "speech model not found: %s (install pocketsphinx-en-us, or "
                 "set SLUICE_ASR_MODEL)",
                 missing);
        return -SL_EINVAL;
    }

    pthread_once(&quiet_once, quiet);
    sl_asr *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    int max_ms = o->max_utterance_ms > 0 ? o->max_utterance_ms : 30000;
    int pause_ms = o->pause_ms > 0 ? o->pause_ms : 200;
    a->max_frames = max_ms / 10 < 100 ? 100 : max_ms / 10;
    a->pause_frames = pause_ms / 10 < 5 ? 5 : pause_ms / 10;
    a->utt = malloc(sizeof(int16_t) * FRAME * (size_t)(a->max_frames + PREROLL));
    if (!a->utt) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }

    /* Model loading touches pocketsphinx's global state (logging, the
     * configuration parser): one thread at a time. */
    pthread_mutex_lock(&init_lock);
    cmd_ln_t *cfg = cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", hmm, "-lm", lm,
                                "-dict", dict, "-remove_silence", "no",
                                "-bestpath", "yes", "-logfn", "/dev/null",
                                NULL);
    if (cfg) {
        a->ps = ps_init(cfg);
        cmd_ln_free_r(cfg); /* the decoder keeps its own reference */
    }
    pthread_mutex_unlock(&init_lock);
    if (!a->ps) {
        snprintf(err, errlen, "pocketsphinx could not load the model in %s",
                 dir);
        free(a->utt);
        free(a);
        return -SL_EINVAL;
    }
    a->lmath = ps_get_logmath(a->ps);
    *out = a;
    return 0;
}

void sl_asr_free(sl_asr *a) {
    if (!a) return;
    ps_free(a->ps);
    free(a->utt);
    free(a);
}

/* ---- one transcription ----------------------------------------------- */

typedef struct run {
    sl_asr *a;
    const sl_asr_cb *cb;
    json_t *words;      /* all words of the file */
    json_t *utterances; /* one object per utterance with words */
    sl_buf text;        /* the transcript */
    int in_utt;
    int64_t utt_start;  /* sample index of the utterance's first frame */
    int utt_frames;     /* frames of this utterance in a->utt */
    int quiet_run;      /* consecutive quiet frames at the end */
    double floor_db;    /* running estimate of the noise floor */
    int16_t pre[PREROLL * FRAME]; /* ring of the last quiet frames */
    int npre, pre_head;           /* frames held, index of the oldest */
    int64_t pos;        /* sample index of the next frame */
    int nomem;
} run;

static double frame_db(const int16_t *s) {
    double e = 0;
    for (int i = 0; i < FRAME; i++) e += (double)s[i] * s[i];
    e /= (double)FRAME * 32768.0 * 32768.0;
    return 10.0 * log10(e + 1e-10);
}

/* A token pocketsphinx uses for silence and noise, not a word. */
static int is_filler(const char *w) {
    return w[0] == '<' || w[0] == '[' || (w[0] == '+' && w[1] == '+') ||
           w[0] == '\0';
}

/* The word without its alternate-pronunciation suffix "(2)"; "i" and its
 * contractions capitalised as English writes them. */
static void clean_word(const char *w, char *out, size_t cap) {
    snprintf(out, cap, "%s", w);
    char *p = strchr(out, '(');
    if (p && p != out) *p = '\0';
    if (out[0] == 'i' && (out[1] == '\0' || out[1] == '\'')) out[0] = 'I';
}

/* Decodes the utterance collected in a->utt and appends its words to the
 * result. The whole utterance goes to the decoder at once so that its
 * cepstral mean is the utterance's own (batch CMN, as the model was
 * trained): results do not depend on what the decoder heard before. */
static int end_utterance(run *r) {
    sl_asr *a = r->a;
    r->in_utt = 0;
    int ended = -1;
    if (ps_start_utt(a->ps) == 0) {
        ps_process_raw(a->ps, a->utt, (size_t)r->utt_frames * FRAME, FALSE,
                       TRUE);
        ended = ps_end_utt(a->ps);
    }
    if (ended < 0) return 0; /* nothing decodable: no words */
    json_t *uw = json_array();
    sl_buf ut;
    sl_buf_init(&ut);
    double confsum = 0;
    int64_t first = -1, last = -1;
    int n = 0;
    if (!uw) {
        r->nomem = 1;
        return -1;
    }
    for (ps_seg_t *seg = ps_seg_iter(a->ps); seg; seg = ps_seg_next(seg)) {
        const char *w = ps_seg_word(seg);
        if (!w || is_filler(w)) continue;
        int sf, ef;
        int32 ascr, lscr, lback;
        /* Decoded as a whole utterance, frame 0 is the utterance's first. */
        ps_seg_frames(seg, &sf, &ef);
        if (sf < 0) sf = 0;
        if (ef < sf) ef = sf;
        double conf = logmath_exp(a->lmath, ps_seg_prob(seg, &ascr, &lscr,
                                                        &lback));
        if (!(conf >= 0)) conf = 0;
        if (conf > 1) conf = 1;
        conf = floor(conf * 1000.0 + 0.5) / 1000.0;
        char word[256];
        clean_word(w, word, sizeof word);
        int64_t start = (r->utt_start + (int64_t)sf * FRAME) * 1000 /
                        SL_AUDIO_RATE;
        int64_t end = (r->utt_start + (int64_t)(ef + 1) * FRAME) * 1000 /
                      SL_AUDIO_RATE;
        json_t *o = json_pack("{s:s, s:I, s:I, s:f}", "text", word, "start",
                              (json_int_t)start, "end", (json_int_t)end,
                              "confidence", conf);
        /* The same object sits in the utterance and in the file's list. */
        if (!o || json_array_append(uw, o) != 0) {
            json_decref(o);
            r->nomem = 1;
            break;
        }
        if (json_array_append_new(r->words, o) != 0) {
            r->nomem = 1;
            break;
        }
        if (first < 0) first = start;
        last = end;
        confsum += conf;
        if (n++) sl_buf_puts(&ut, " ");
        sl_buf_puts(&ut, word);
    }
    if (n > 0 && !r->nomem && !sl_buf_failed(&ut)) {
        /* A pause ends a sentence: capital letter, full stop. */
        char *s = ut.s;
        s[0] = (char)toupper((unsigned char)s[0]);
        sl_buf_puts(&ut, ".");
        if (r->text.len) sl_buf_puts(&r->text, " ");
        sl_buf_puts(&r->text, sl_buf_str(&ut));
        double c = floor(confsum / n * 1000.0 + 0.5) / 1000.0;
        json_t *u = json_pack("{s:s, s:s, s:I, s:I, s:f, s:O}", "speaker", "A",
                              "text", sl_buf_str(&ut), "start",
                              (json_int_t)first, "end", (json_int_t)last,
                              "confidence", c, "words", uw);
        if (!u || json_array_append_new(r->utterances, u) != 0) r->nomem = 1;
    }
    if (sl_buf_failed(&ut)) r->nomem = 1;
    sl_buf_free(&ut);
    json_decref(uw);
    return r->nomem ? -1 : 0;
}

static void start_utterance(run *r) {
    r->in_utt = 1;
    r->utt_frames = 0;
    r->quiet_run = 0;
    /* The quiet just before the speech goes first: onsets are soft. */
    r->utt_start = r->pos - (int64_t)r->npre * FRAME;
    for (int i = 0; i < r->npre; i++) {
        int k = (r->pre_head + i) % PREROLL;
        memcpy(r->a->utt + (size_t)r->utt_frames * FRAME, r->pre + k * FRAME,
               sizeof(int16_t) * FRAME);
        r->utt_frames++;
    }
    r->npre = 0;
    r->pre_head = 0;
}

static void remember_quiet(run *r, const int16_t *s) {
    int k;
    if (r->npre < PREROLL) {
        k = (r->pre_head + r->npre) % PREROLL;
        r->npre++;
    } else {
        k = r->pre_head;
        r->pre_head = (r->pre_head + 1) % PREROLL;
    }
    memcpy(r->pre + k * FRAME, s, sizeof(int16_t) * FRAME);
}

/* One 10 ms frame through the pause detector and, inside speech, the
 * decoder. */
static int frame(run *r, const int16_t *s) {
    sl_asr *a = r->a;
    double db = frame_db(s);
    double thr = r->floor_db + SPEECH_OVER;
    if (thr < SPEECH_MIN) thr = SPEECH_MIN;
    int speech = db > thr;
    /* The floor follows quiet frames quickly and creeps up under speech
     * only slowly, so a steady background noise is learnt within seconds
     * while a long sentence does not become the floor. */
    if (!speech || db < r->floor_db)
        r->floor_db += (db - r->floor_db) * (db < r->floor_db ? 0.2 : 0.05);
    else
        r->floor_db += (db - r->floor_db) * 0.0005;

    if (!r->in_utt) {
        if (speech) start_utterance(r);
        else {
            remember_quiet(r, s);
            r->pos += FRAME;
            return 0;
        }
    }
    memcpy(a->utt + (size_t)r->utt_frames * FRAME, s, sizeof(int16_t) * FRAME);
    r->utt_frames++;
    r->quiet_run = speech ? 0 : r->quiet_run + 1;
    r->pos += FRAME;
    if (r->quiet_run >= a->pause_frames ||
        (r->utt_frames >= a->max_frames * 2 / 3 && r->quiet_run >= 10) ||
        r->utt_frames >= a->max_frames + PREROLL)
        return end_utterance(r);
    return 0;
}

static void fmt_time(char *out, size_t cap, int64_t ms) {
    int64_t s = (ms + 500) / 1000;
    if (s >= 3600)
        snprintf(out, cap, "%d:%02d:%02d", (int)(s / 3600),
                 (int)(s / 60 % 60), (int)(s % 60));
    else
        snprintf(out, cap, "%d:%02d", (int)(s / 60), (int)(s % 60));
}

static void report(run *r, int64_t total_ms, int *last_pct) {
    if (!r->cb || !r->cb->progress) return;
    int64_t done_ms = r->pos * 1000 / SL_AUDIO_RATE;
    char detail[128], d1[32], d2[32];
    fmt_time(d1, sizeof d1, done_ms);
    if (total_ms > 0) {
        int pct = (int)(done_ms * 100 / total_ms);
        if (pct > 99) pct = 99; /* 100 is for done */
        if (pct == *last_pct) return;
        *last_pct = pct;
        fmt_time(d2, sizeof d2, total_ms);
        snprintf(detail, sizeof detail, "decoding %d%% (%s of %s)", pct, d1,
                 d2);
        r->cb->progress(r->cb->user, pct, detail);
    } else {
        snprintf(detail, sizeof detail, "decoding (%s so far)", d1);
        r->cb->progress(r->cb->user, 0, detail);
    }
}

int sl_asr_transcribe_file(sl_asr *a, const char *path, const sl_asr_cb *cb,
                           json_t **out, char *err, size_t errlen) {
    *out = NULL;
    int64_t total_ms = sl_audio_probe_ms(path);
    sl_audio *au = NULL;
    int16_t *block = malloc(sizeof(int16_t) * BLOCK);
    run *r = calloc(1, sizeof *r);
    int rc = -SL_ENOMEM, last_pct = -1;
    if (!block || !r) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    r->a = a;
    r->cb = cb;
    r->floor_db = FLOOR_START;
    sl_buf_init(&r->text);
    r->words = json_array();
    r->utterances = json_array();
    if (!r->words || !r->utterances) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = sl_audio_open(path, &au, err, errlen);
    if (rc != 0) goto out;
    /* The front end's noise estimate starts afresh: a file's transcript
     * does not depend on the files decoded before it. */
    ps_start_stream(a->ps);
    report(r, total_ms, &last_pct);

    int16_t partial[FRAME];
    int npartial = 0; /* samples of an incomplete frame carried over */
    for (;;) {
        if (cb && cb->should_stop && cb->should_stop(cb->user)) {
            snprintf(err, errlen, "stopped");
            rc = -SL_ESTOP;
            goto out;
        }
        ssize_t n = sl_audio_read(au, block, BLOCK, err, errlen);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        if (n == 0) break;
        ssize_t i = 0;
        if (npartial) {
            while (npartial < FRAME && i < n) partial[npartial++] = block[i++];
            if (npartial == FRAME) {
                npartial = 0;
                if (frame(r, partial) != 0) goto nomem;
            }
        }
        for (; i + FRAME <= n; i += FRAME)
            if (frame(r, block + i) != 0) goto nomem;
        while (i < n) partial[npartial++] = block[i++];
        report(r, total_ms, &last_pct);
    }
    if (npartial) {
        /* The last few milliseconds, padded with silence. */
        memset(partial + npartial, 0, sizeof(int16_t) * (FRAME - npartial));
        if (frame(r, partial) != 0) goto nomem;
    }
    if (r->in_utt && end_utterance(r) != 0) goto nomem;
    /* Garbage that ffmpeg took for some format decodes to noise, with
     * complaints: without a single word recognised, that is an error. A
     * damaged file that still holds speech is transcribed. */
    char said[512];
    size_t nsaid = sl_audio_complaints(au, said, sizeof said);
    if (sl_audio_samples(au) == 0 ||
        (nsaid > 0 && json_array_size(r->words) == 0)) {
        if (nsaid)
            snprintf(err, errlen, "%s (ffmpeg: %s)",
                     sl_audio_samples(au) ? "no speech in audio ffmpeg could "
                                            "not decode cleanly"
                                          : "no audio decoded",
                     said);
        else
            snprintf(err, errlen, "no audio decoded");
        rc = -SL_EINVAL;
        goto out;
    }
    if (sl_buf_failed(&r->text)) goto nomem;
    int64_t dur_ms = sl_audio_samples(au) * 1000 / SL_AUDIO_RATE;
    *out = json_pack("{s:s, s:O, s:O, s:f, s:s}", "transcript",
                     sl_buf_str(&r->text), "words", r->words, "utterances",
                     r->utterances, "audio_duration", (double)dur_ms / 1000.0,
                     "provider", "pocketsphinx");
    if (!*out) goto nomem;
    rc = 0;
    goto out;
nomem:
    snprintf(err, errlen, "out of memory");
    rc = -SL_ENOMEM;
out:
    if (r) {
        json_decref(r->words);
        json_decref(r->utterances);
        sl_buf_free(&r->text);
    }
    sl_audio_close(au);
    free(r);
    free(block);
    return rc;
}
