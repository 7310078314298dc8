/* cli_runcheck.c - what `sluice run` checks before any worker starts: the
 * database can be reached, it holds every queue table and column of the
 * selected stages (sl_migrate_check_stages), the connections the run
 * will open fit the server's max_connections, and the role is not a
 * superuser or BYPASSRLS one unless --allow-superuser. */
#include <assert.h>
#include <stdio.h>

#include "cli_priv.h"
#include "error.h"
#include "metrics.h"
#include "migrate.h"
#include "reads.h"

/* The connections a run with o opens: one per worker thread of every
 * selected stage, plus the control thread's. */
static long run_connections(const sl_model *m, const sl_runtime_opts *o) {
    long n = 1;
    for (size_t i = 0; i < m->npipelines; i++)
        for (size_t k = 0; k < m->pipelines[i].nstages; k++) {
            const sl_stage *s = &m->pipelines[i].stages[k];
            if (!sl_stage_selected(s, o->only, o->only ? o->nonly : 0))
                continue;
            n += o->concurrency > 0 ? o->concurrency : s->concurrency;
        }
    return n;
}

int sl_cli_run_preflight(const sl_model *m, const sl_runtime_opts *o,
                         int allow_superuser) {
    assert(m && o);
    const char *cmd = "run";
    char err[2048];
    long usable = 0;
    int rc = SL_EXIT_FAILURE;
    PGconn *c = sl_cli_connect(cmd, o->conninfo && *o->conninfo ? o->conninfo
                                                                : NULL);
    if (!c) return SL_EXIT_FAILURE;
    char role[128];
    const char *what = "";
    int privileged = 0;
    int e = sl_reads_role(c, role, sizeof role, &privileged, &what, err,
                          sizeof err);
    if (e != 0) {
        sl_cli_say(cmd, "%s", err);
        goto out;
    }
    /* A worker runs hooks, whose SQL could read server files
     * (pg_read_file), run programs (COPY ... TO PROGRAM) and see every
     * tenant's rows as such a role. */
    if (privileged && !allow_superuser) {
        sl_cli_say(cmd,
                   "refusing to run as role \"%s\": it is a %s. Workers run "
                   "hooks, whose SQL could then read server files, run "
                   "programs and bypass row security. Connect as the "
                   "pipeline's own role (docs/operations.md), or pass "
                   "--allow-superuser.",
                   role, what);
        goto out;
    }
    e = sl_migrate_check_stages(c, m, o->only, o->only ? o->nonly : 0,
                                    err, sizeof err);
    if (e != 0) {
        sl_cli_say(cmd, "%s", err);
        goto out;
    }
    e = sl_reads_max_connections(c, &usable, err, sizeof err);
    if (e != 0) {
        sl_cli_say(cmd, "%s", err);
        goto out;
    }
    long need = run_connections(m, o);
    if (need > usable)
        sl_cli_say(cmd,
                   "warning: this run opens %ld connections (the selected "
                   "stages' concurrency + 1) but the server allows %ld "
                   "(max_connections less reserved ones); lower -c or "
                   "concurrency:, or raise max_connections",
                   need, usable);
    /* Counts the jobs this process fails for good (--exit-when-idle). */
    sl_metrics_init(m);
    rc = SL_EXIT_OK;
out:
    PQfinish(c);
    return rc;
}
