/* cloudpipe.h - the interview pipeline the cloud tests run (the shipped
 * pipelines/interview.yaml with test-sized timings), and the interview
 * they feed it. Header-only, like fakecloud.h.
 */
#ifndef SL_CLOUDPIPE_H
#define SL_CLOUDPIPE_H

#include <stdio.h>

/* An interview the fake "transcribes" to exactly these lines. The fake LLM
 * finds one insight in each participant line with a cue word: Dana:
 * pain_point, wish; Sam: praise, pain_point, wish. */
#define CLOUD_MEDIA                                                          \
    "Interviewer: Thanks for joining us today. How do you track invoices?\n" \
    "Dana: Honestly it is frustrating, the export is slow and I redo it by " \
    "hand.\n"                                                                \
    "Interviewer: What would make that better for you?\n"                    \
    "Dana: I wish the monthly reports were automatic, that would save me "   \
    "hours.\n"                                                               \
    "Interviewer: And you, Sam?\n"                                           \
    "Sam: I love how simple the search is, it is great.\n"                   \
    "Sam: But the mobile app is broken when I upload receipts.\n"            \
    "Interviewer: Anything else?\n"                                          \
    "Sam: I would love a dark mode for late evenings.\n"
#define CLOUD_INSIGHTS 5
#define CLOUD_PERSONAS 2

/* Options of the test pipeline. */
typedef struct cloud_opts {
    int max_attempts;        /* default 4 */
    const char *request_timeout; /* default 2s */
    const char *poll_interval;   /* default 100ms */
    const char *lease;           /* default 2s */
    int chunk_chars;             /* default 200 */
    const char *timeout;         /* stage timeout, default 30s */
} cloud_opts;

/* The pipeline YAML (static buffer). */
static inline const char *cloud_yaml(cloud_opts o) {
    static char buf[4096];
    snprintf(
        buf, sizeof buf,
        "pipeline: interview\n"
        "subject:\n"
        "  table: interviews\n"
        "  foreign_key: interview_id\n"
        "  status:\n"
        "    column: status\n"
        "    values: [uploading, uploaded, transcribed, processing, ready, "
        "error]\n"
        "  progress: progress\n"
        "  detail: status_detail\n"
        "sweep: {interval: 200ms, pending_age: 1s}\n"
        "defaults:\n"
        "  retry: {max_attempts: %d, backoff: fixed, initial: 50ms, "
        "max_delay: 2s, jitter: 0}\n"
        "  timeout: %s\n"
        "  lease: %s\n"
        "  heartbeat: 300ms\n"
        "stages:\n"
        "  upload:\n"
        "    queue: upload_jobs\n"
        "    handler: assemblyai.upload\n"
        "    with: {base_url: \"${ASSEMBLYAI_BASE_URL}\", request_timeout: "
        "%s}\n"
        "    columns: {media_file: bytea, external_url: text}\n"
        "    status:\n"
        "      on_start: {status: uploading, progress: 5, detail: \"Uploading "
        "file\"}\n"
        "      on_done: {status: uploaded, progress: 20, detail: \"File "
        "uploaded\"}\n"
        "      on_error: {status: error, detail: \"Processing failed\"}\n"
        "    next: [{stage: transcribe, map: {upload_url: upload_url}}]\n"
        "  transcribe:\n"
        "    queue: transcription_jobs\n"
        "    handler: assemblyai.transcribe\n"
        "    with: {base_url: \"${ASSEMBLYAI_BASE_URL}\", request_timeout: "
        "%s, poll_interval: %s, subject_column: transcript}\n"
        "    columns: {upload_url: text, transcript: text, utterances: jsonb, "
        "words: jsonb}\n"
        "    status:\n"
        "      on_start: {status: uploaded, detail: \"Transcribing\"}\n"
        "      on_done: {status: transcribed, progress: 50, detail: "
        "\"Transcription complete\"}\n"
        "      on_error: {status: error, detail: \"Processing failed\"}\n"
        "    next: [{stage: analyze, map: {transcript: transcript}}]\n"
        "  analyze:\n"
        "    queue: analysis_jobs\n"
        "    handler: llm.analyze\n"
        "    with: {base_url: \"${OPENAI_BASE_URL}\", model: test-model, "
        "request_timeout: %s, chunk_chars: %d, temperature: 0.2}\n"
        "    columns: {transcript: text}\n"
        "    status:\n"
        "      on_start: {status: processing, progress: 70, detail: "
        "\"Analyzing insights\"}\n"
        "      progress: {status: processing, from: 70, to: 99}\n"
        "      on_done: {status: ready, progress: 100, detail: \"Ready!\"}\n"
        "      on_error: {status: error, detail: \"Processing failed\"}\n",
        o.max_attempts ? o.max_attempts : 4, o.timeout ? o.timeout : "30s",
        o.lease ? o.lease : "2s",
        o.request_timeout ? o.request_timeout : "2s",
        o.request_timeout ? o.request_timeout : "2s",
        o.poll_interval ? o.poll_interval : "100ms",
        o.request_timeout ? o.request_timeout : "2s",
        o.chunk_chars ? o.chunk_chars : 200);
    return buf;
}

#endif
