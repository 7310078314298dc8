/* metrics.c - counters and histograms with atomics, one slot per stage of
 * the model, rendered in the Prometheus text format. */
#include "metrics.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* Bucket upper bounds in seconds, shared by every histogram. */
static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                0.5,   1,     2.5,  5,     10,   30,  60,
                                300,   900,   3600};
#define NB (sizeof bounds / sizeof bounds[0])

typedef struct histo {
    atomic_llong bucket[NB + 1]; /* non-cumulative; last is +Inf */
    atomic_llong sum_us;
    atomic_llong count;
} histo;

typedef struct stage_m {
    const sl_stage *s;
    atomic_llong enqueued;
    atomic_llong attempts[SL_ATTEMPT__COUNT];
    atomic_llong lua_errors;
    atomic_int slots_total, slots_busy;
    histo run, wait;
} stage_m;

typedef struct pipe_m {
    const sl_pipeline *p;
    histo e2e;
} pipe_m;

#define MAX_PROVIDERS 16
typedef struct prov_m {
    const char *name; /* static string from a handler */
    atomic_llong rate_limited, errors_5xx;
    histo dur;
} prov_m;

static stage_m *stages;
static size_t nstages;
static pipe_m *pipes;
static size_t npipes;
static prov_m provs[MAX_PROVIDERS];
static atomic_int nprovs;
static pthread_mutex_t prov_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_llong db_errors, reconnects;

static const char *const outcome_names[SL_ATTEMPT__COUNT] = {
    "success", "retry", "failed", "cancelled", "lease_expired", "snoozed"};

void sl_metrics_fini(void) {
    free(stages);
    free(pipes);
    stages = NULL;
    pipes = NULL;
    nstages = npipes = 0;
}

void sl_metrics_init(const sl_model *m) {
    assert(m);
    sl_metrics_fini();
    size_t n = 0;
    for (size_t i = 0; i < m->npipelines; i++) n += m->pipelines[i].nstages;
    stages = calloc(n ? n : 1, sizeof *stages);
    pipes = calloc(m->npipelines ? m->npipelines : 1, sizeof *pipes);
    if (!stages || !pipes) {
        sl_metrics_fini();
        return;
    }
    for (size_t i = 0; i < m->npipelines; i++) {
        pipes[npipes++].p = &m->pipelines[i];
        for (size_t k = 0; k < m->pipelines[i].nstages; k++)
            stages[nstages++].s = &m->pipelines[i].stages[k];
    }
}

static stage_m *slot(const sl_stage *s) {
    for (size_t i = 0; i < nstages; i++)
        if (stages[i].s == s) return &stages[i];
    return NULL;
}

static void observe(histo *h, int64_t ms) {
    double sec = (double)ms / 1000.0;
    size_t b = 0;
    while (b < NB && sec > bounds[b]) b++;
    atomic_fetch_add(&h->bucket[b], 1);
    atomic_fetch_add(&h->sum_us, (long long)ms * 1000);
    atomic_fetch_add(&h->count, 1);
}

void sl_metrics_enqueued(const sl_stage *s, long n) {
    stage_m *x = slot(s);
    if (x && n > 0) atomic_fetch_add(&x->enqueued, n);
}

void sl_metrics_attempt(const sl_stage *s, sl_attempt_outcome o,
                        int64_t run_ms) {
    assert(o >= 0 && o < SL_ATTEMPT__COUNT);
    stage_m *x = slot(s);
    if (!x) return;
    atomic_fetch_add(&x->attempts[o], 1);
    if (run_ms >= 0) observe(&x->run, run_ms);
}

long long sl_metrics_attempts_total(sl_attempt_outcome o) {
    assert(o >= 0 && o < SL_ATTEMPT__COUNT);
    long long n = 0;
    for (size_t i = 0; i < nstages; i++)
        n += atomic_load(&stages[i].attempts[o]);
    return n;
}

void sl_metrics_wait(const sl_stage *s, int64_t wait_ms) {
    stage_m *x = slot(s);
    if (x) observe(&x->wait, wait_ms < 0 ? 0 : wait_ms);
}

void sl_metrics_subject_done(const sl_pipeline *p, int64_t e2e_ms) {
    for (size_t i = 0; i < npipes; i++)
        if (pipes[i].p == p) observe(&pipes[i].e2e, e2e_ms < 0 ? 0 : e2e_ms);
}

void sl_metrics_slots(const sl_stage *s, int total, int busy) {
    stage_m *x = slot(s);
    if (!x) return;
    atomic_store(&x->slots_total, total);
    atomic_store(&x->slots_busy, busy);
}

void sl_metrics_lua_error(const sl_stage *s) {
    stage_m *x = slot(s);
    if (x) atomic_fetch_add(&x->lua_errors, 1);
}

void sl_metrics_db_error(void) { atomic_fetch_add(&db_errors, 1); }
void sl_metrics_reconnect(void) { atomic_fetch_add(&reconnects, 1); }

static prov_m *provider(const char *name) {
    int n = atomic_load(&nprovs);
    for (int i = 0; i < n; i++)
        if (strcmp(provs[i].name, name) == 0) return &provs[i];
    pthread_mutex_lock(&prov_mu);
    n = atomic_load(&nprovs);
    prov_m *p = NULL;
    for (int i = 0; i < n && !p; i++)
        if (strcmp(provs[i].name, name) == 0) p = &provs[i];
    if (!p && n < MAX_PROVIDERS) {
        p = &provs[n];
        p->name = name;
        atomic_store(&nprovs, n + 1);
    }
    pthread_mutex_unlock(&prov_mu);
    return p;
}

void sl_metrics_external(const char *provider_name, int64_t ms, long status) {
    prov_m *p = provider(provider_name ? provider_name : "other");
    if (!p) return;
    observe(&p->dur, ms);
    if (status == 429) atomic_fetch_add(&p->rate_limited, 1);
    if (status >= 500 && status <= 599) atomic_fetch_add(&p->errors_5xx, 1);
}

/* ---- rendering ---------------------------------------------------------- */

static void family(sl_buf *b, const char *name, const char *type,
                   const char *help) {
    sl_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_histo(sl_buf *b, const char *name, const char *labels,
                         const histo *h) {
    long long cum = 0;
    for (size_t i = 0; i <= NB; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < NB)
            sl_buf_printf(b, "%s_bucket{%s,le=\"%g\"} %lld\n", name, labels,
                          bounds[i], cum);
        else
            sl_buf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %lld\n", name, labels,
                          cum);
    }
    sl_buf_printf(b, "%s_sum{%s} %.6f\n%s_count{%s} %lld\n", name, labels,
                  (double)atomic_load(&h->sum_us) / 1e6, name, labels,
                  (long long)atomic_load(&h->count));
}

/* Identifiers in the model are [a-z_][a-z0-9_]*: nothing to escape. */
static void stage_labels(char *out, size_t n, const sl_stage *s) {
    snprintf(out, n, "pipeline=\"%s\",stage=\"%s\"", s->pipeline->name,
             s->name);
}

static void render_stages(sl_buf *b) {
    char l[300];
    family(b, "sluice_jobs_enqueued_total", "counter",
           "Jobs this process handed on to the stage (hand-offs on completion).");
    for (size_t i = 0; i < nstages; i++) {
        stage_labels(l, sizeof l, stages[i].s);
        sl_buf_printf(b, "sluice_jobs_enqueued_total{%s} %lld\n", l,
                      (long long)atomic_load(&stages[i].enqueued));
    }
    family(b, "sluice_job_attempts_total", "counter",
           "Job attempts by how they ended.");
    for (size_t i = 0; i < nstages; i++) {
        stage_labels(l, sizeof l, stages[i].s);
        for (int o = 0; o < SL_ATTEMPT__COUNT; o++)
            sl_buf_printf(b, "sluice_job_attempts_total{%s,outcome=\"%s\"} %lld\n",
                          l, outcome_names[o],
                          (long long)atomic_load(&stages[i].attempts[o]));
    }
    family(b, "sluice_leases_expired_total", "counter",
           "Jobs rescued by this process's sweep after their lease expired.");
    for (size_t i = 0; i < nstages; i++) {
        stage_labels(l, sizeof l, stages[i].s);
        sl_buf_printf(b, "sluice_leases_expired_total{%s} %lld\n", l,
                      (long long)atomic_load(
                          &stages[i].attempts[SL_ATTEMPT_LEASE_EXPIRED]));
    }
    family(b, "sluice_lua_errors_total", "counter",
           "Lua hook and stage calls that raised (sluice.fail, sluice.retry, errors, limits).");
    for (size_t i = 0; i < nstages; i++) {
        stage_labels(l, sizeof l, stages[i].s);
        sl_buf_printf(b, "sluice_lua_errors_total{%s} %lld\n", l,
                      (long long)atomic_load(&stages[i].lua_errors));
    }
    family(b, "sluice_worker_slots", "gauge",
           "Worker threads of this process by state (busy, free).");
    for (size_t i = 0; i < nstages; i++) {
        int total = atomic_load(&stages[i].slots_total);
        int busy = atomic_load(&stages[i].slots_busy);
        stage_labels(l, sizeof l, stages[i].s);
        sl_buf_printf(b, "sluice_worker_slots{%s,state=\"busy\"} %d\n", l, busy);
        sl_buf_printf(b, "sluice_worker_slots{%s,state=\"free\"} %d\n", l,
                      total - busy);
    }
    family(b, "sluice_job_run_duration_seconds", "histogram",
           "Handler run time of each attempt.");
    for (size_t i = 0; i < nstages; i++) {
        stage_labels(l, sizeof l, stages[i].s);
        render_histo(b, "sluice_job_run_duration_seconds", l, &stages[i].run);
    }
    family(b, "sluice_job_wait_seconds", "histogram",
           "Time from when a job was due to when it was claimed.");
    for (size_t i = 0; i < nstages; i++) {
        stage_labels(l, sizeof l, stages[i].s);
        render_histo(b, "sluice_job_wait_seconds", l, &stages[i].wait);
    }
}

static void render_others(sl_buf *b) {
    char l[300];
    family(b, "sluice_subject_duration_seconds", "histogram",
           "Time from a subject's first job to the done of its last stage.");
    for (size_t i = 0; i < npipes; i++) {
        snprintf(l, sizeof l, "pipeline=\"%s\"", pipes[i].p->name);
        render_histo(b, "sluice_subject_duration_seconds", l, &pipes[i].e2e);
    }
    int n = atomic_load(&nprovs);
    family(b, "sluice_external_request_duration_seconds", "histogram",
           "Requests to external providers.");
    for (int i = 0; i < n; i++) {
        snprintf(l, sizeof l, "provider=\"%s\"", provs[i].name);
        render_histo(b, "sluice_external_request_duration_seconds", l,
                     &provs[i].dur);
    }
    family(b, "sluice_external_rate_limited_total", "counter",
           "Provider answers 429 (rate limited).");
    for (int i = 0; i < n; i++)
        sl_buf_printf(b, "sluice_external_rate_limited_total{provider=\"%s\"} %lld\n",
                      provs[i].name, (long long)atomic_load(&provs[i].rate_limited));
    family(b, "sluice_external_server_errors_total", "counter",
           "Provider answers 5xx.");
    for (int i = 0; i < n; i++)
        sl_buf_printf(b, "sluice_external_server_errors_total{provider=\"%s\"} %lld\n",
                      provs[i].name, (long long)atomic_load(&provs[i].errors_5xx));
    family(b, "sluice_db_errors_total", "counter",
           "Statements the database refused or that lost their connection.");
    sl_buf_printf(b, "sluice_db_errors_total %lld\n",
                  (long long)atomic_load(&db_errors));
    family(b, "sluice_db_reconnects_total", "counter",
           "Database connections re-established.");
    sl_buf_printf(b, "sluice_db_reconnects_total %lld\n",
                  (long long)atomic_load(&reconnects));
    family(b, "sluice_build_info", "gauge", "The running build (always 1).");
    sl_buf_printf(b, "sluice_build_info{version=\"%s\"} 1\n", SL_VERSION);
}

void sl_metrics_render(sl_buf *b) {
    assert(b);
    render_stages(b);
    render_others(b);
}
