/* schema_view.c - the sluice_statistics view (docs/cli.md, `sluice
 * stats`): one row per queue, every figure read through an index so that
 * millions of finished jobs kept do not make it slow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "schema_priv.h"

/* Appends "status = '<st>'::text::job_status": a value added to
 * job_status in the same transaction as the view may not be used as an
 * enum constant yet, so the text becomes the enum value when a query
 * runs (a stable cast the planner still evaluates to estimate the rows,
 * and an index condition), never when the view is created; a text
 * comparison could not use an index. */
static void status_is(sl_buf *q, const char *st) {
    sl_buf_ident(q, "status");
    sl_buf_puts(q, " = ");
    sl_buf_literal(q, st);
    sl_buf_puts(q, "::text::");
    sl_buf_ident(q, ENUM_NAME);
}

/* Appends " FROM <tab> WHERE <status is st>". */
static void from_status(sl_buf *q, const char *tab, const char *st) {
    sl_buf_printf(q, " FROM %s WHERE ", tab);
    status_is(q, st);
}

/* The view's row for queue t (docs/cli.md, `sluice stats`). Every part
 * reads an index, never the whole table: pending, in_progress and retry
 * are exact counts through the listing index (status, created_at, id);
 * done, error and cancelled (n.c3..n.c5) are counted up to 10,001, and
 * beyond 10,000 the view shows the estimate of the table's statistics
 * (pg_class.reltuples times the status's frequency in pg_stats, as of
 * the last ANALYZE; e, read once per queue), never below 10,001, or the
 * exact count when there are no statistics or the caller is under Row
 * Level Security (the estimate would count other tenants' rows); the mean
 * run time is that
 * of the last 1,000 done jobs (finished index). */
static void view_branch(sl_buf *q, const char *t,
                        const char *const counted[6]) {
    sl_buf qt, rc;
    sl_buf_init(&qt);
    sl_buf_init(&rc);
    sl_buf_ident(&qt, t);
    const char *tab = sl_buf_str(&qt);
    sl_buf_literal(&rc, tab);
    sl_buf_puts(q, "SELECT ");
    sl_buf_literal(q, t);
    sl_buf_puts(q, "::text AS ");
    sl_buf_ident(q, "queue");
    for (size_t k = 0; k < 6; k++) {
        if (k < 3) {
            sl_buf_printf(q, ", n.c%zu AS ", k);
        } else {
            /* The estimate counts every row of the table: a caller under
             * Row Level Security (a tenant) gets its own exact count. */
            sl_buf_printf(q, ",\n       CASE WHEN n.c%zu <= 10000 THEN n.c%zu"
                             " WHEN row_security_active(%s::regclass) THEN"
                             " (SELECT count(*)",
                          k, k, sl_buf_str(&rc));
            from_status(q, tab, counted[k]);
            sl_buf_printf(q, ") ELSE COALESCE(GREATEST(n.c%zu, (e.r *"
                             " e.f[array_position(e.v, ",
                          k);
            sl_buf_literal(q, counted[k]);
            sl_buf_puts(q, ")])::bigint), (SELECT count(*)");
            from_status(q, tab, counted[k]);
            sl_buf_puts(q, ")) END AS ");
        }
        sl_buf_ident(q, counted[k]);
    }
    sl_buf_puts(q, ",\n       (SELECT now() - min(");
    sl_buf_ident(q, "run_at");
    sl_buf_puts(q, ")");
    from_status(q, tab, "pending");
    sl_buf_puts(q, " AND ");
    sl_buf_ident(q, "run_at");
    sl_buf_puts(q, " <= now()) AS ");
    sl_buf_ident(q, "oldest_pending_age");
    sl_buf_puts(q, ",\n       (SELECT avg(d.f - d.s) FROM (SELECT ");
    sl_buf_ident(q, "finished_at");
    sl_buf_puts(q, " AS f, ");
    sl_buf_ident(q, "started_at");
    sl_buf_puts(q, " AS s");
    from_status(q, tab, "done");
    sl_buf_puts(q, " AND ");
    sl_buf_ident(q, "finished_at");
    sl_buf_puts(q, " IS NOT NULL ORDER BY ");
    sl_buf_ident(q, "finished_at");
    sl_buf_puts(q, " DESC LIMIT 1000) d) AS ");
    sl_buf_ident(q, "mean_run_time");
    sl_buf_puts(q, "\n  FROM (SELECT");
    for (size_t k = 0; k < 6; k++) {
        sl_buf_puts(q, k ? ", " : " ");
        sl_buf_puts(q, k < 3 ? "(SELECT count(*)"
                             : "(SELECT count(*) FROM (SELECT 1");
        from_status(q, tab, counted[k]);
        sl_buf_printf(q, "%s) AS c%zu", k < 3 ? "" : " LIMIT 10001) l", k);
    }
    /* OFFSET 0 keeps n a subquery: flattened, each count would run once
     * per reference. */
    sl_buf_printf(q, " OFFSET 0) n LEFT JOIN LATERAL (SELECT c.reltuples AS r,"
                     " s.most_common_vals::text::text[] AS v,"
                     " s.most_common_freqs AS f FROM pg_catalog.pg_class c"
                     " JOIN pg_catalog.pg_namespace ns ON ns.oid ="
                     " c.relnamespace JOIN pg_catalog.pg_stats s ON"
                     " s.schemaname = ns.nspname AND s.tablename = c.relname"
                     " AND s.attname = 'status' WHERE c.oid = %s::regclass"
                     " AND (n.c3 > 10000 OR n.c4 > 10000 OR n.c5 > 10000))"
                     " e ON true",
                  sl_buf_str(&rc));
    /* Out of memory: a byte no statement may hold makes the view fail. */
    if (sl_buf_failed(&qt) || sl_buf_failed(&rc)) sl_buf_puts(q, " \x01");
    sl_buf_free(&qt);
    sl_buf_free(&rc);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The queues the view counts (malloc'd array of borrowed names, caller
 * frees): the model's in model order (history tables left out); with
 * other applications' queues, all of them in name order, each once. */
static const char **view_queues(builder *b, size_t *n) {
    const sl_schema *s = b->s;
    *n = 0;
    const char **v = malloc((s->ntables + b->nothers + 1) * sizeof *v);
    if (!v) {
        sl_schema__fail(b, -SL_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < s->ntables; i++)
        if (!s->tables[i].history) v[(*n)++] = s->tables[i].name;
    if (b->nothers == 0) return v;
    for (size_t i = 0; i < b->nothers; i++) {
        sl_schema__check_ident(b, b->others[i], "queue", "another pipeline");
        v[(*n)++] = b->others[i];
    }
    qsort(v, *n, sizeof *v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0) v[k++] = v[i];
    *n = k;
    return v;
}

void sl_schema__build_view(builder *b) {
    static const char *const counted[] = {
        "pending", "in_progress", "retry", "done", "error", "cancelled"};
    sl_schema__claim_name(b, "relation", STATS_VIEW, "the statistics view");
    sl_buf q;
    sl_buf_init(&q);
    sl_buf_puts(&q, "CREATE OR REPLACE VIEW ");
    sl_buf_ident(&q, STATS_VIEW);
    sl_buf_puts(&q, " WITH (security_invoker = true) AS\n");
    size_t nq = 0;
    const char **queues = view_queues(b, &nq);
    if (nq == 0) {
        sl_buf_puts(&q, "SELECT NULL::text AS ");
        sl_buf_ident(&q, "queue");
        for (size_t k = 0; k < 6; k++) {
            sl_buf_puts(&q, ", 0::bigint AS ");
            sl_buf_ident(&q, counted[k]);
        }
        sl_buf_puts(&q, ", NULL::interval AS ");
        sl_buf_ident(&q, "oldest_pending_age");
        sl_buf_puts(&q, ", NULL::interval AS ");
        sl_buf_ident(&q, "mean_run_time");
        sl_buf_puts(&q, "\n WHERE false");
    }
    for (size_t i = 0; i < nq; i++) {
        if (i) sl_buf_puts(&q, "\nUNION ALL\n");
        view_branch(&q, queues[i], counted);
    }
    free(queues);
    sl_buf_puts(&q, ";\n");
    sl_buf on;
    sl_buf_init(&on);
    sl_buf_puts(&on, "VIEW ");
    sl_buf_ident(&on, STATS_VIEW);
    char *sql = sl_schema__take(b, &q), *target = sl_schema__take(b, &on);
    if (sql && target)
        sl_schema__add_object(b, SL_OBJ_VIEW, STATS_VIEW, NULL, -1, sql, target,
                              NULL);
    free(sql);
    free(target);
    sl_schema__add_grant(b, STATS_VIEW, "SELECT");
}

