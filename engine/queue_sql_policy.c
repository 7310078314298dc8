/* queue_sql_policy.c - the claim candidates of a stage with `fair:` or
 * `limit:` (docs/dsl.md, "fair and limit"), and the statement that takes
 * a limited claim's per-key advisory locks. Part of the queue SQL
 * (queue_sql.c builds the rest of the claim around these CTEs).
 *
 * Cost model (docs/performance.md): a fair claim visits at most
 * `batch + 3` keys, in the order of a per-process cursor (the last key
 * served), with one index probe to find each next key (a skip scan over
 * the fair index) and one LATERAL index scan of at most a few jobs per
 * key; a limited claim reads a window of 2 x batch + 64 jobs in claim
 * order, skipping the keys already at their limit, and takes an advisory
 * lock per key it may claim from (never waiting: a key another claim
 * holds is passed over), so claims for different keys never serialise.
 * Nothing here is proportional to the backlog.
 */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "queue_priv.h"

/* The SQL type of declared column `name` of s (a whitelisted type). */
static const char *column_type(const sl_stage *s, const char *name) {
    const sl_column *c = sl_stage_column(s, name);
    const char *t = c ? sl_type_normalise(c->type) : NULL;
    return t ? t : "text";
}

/* " FROM <queue> WHERE status IN (due) AND run_at <= now()". */
static void due_from(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, " FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status IN ('pending','retry') AND run_at <="
                   " now()");
}

/* "<name> AS (...)", a piece of WITH RECURSIVE: the skip scan over the
 * fair key's distinct values with due jobs, in order, from the first
 * value after `lo` (NULL: from the first value), one index probe per
 * value, at most `most` values, and (with `stop`) no further once a value
 * reaches stop; n numbers them. Every bound is an index condition: an OR
 * with a NULL test would make a generic plan filter the index from its
 * start. */
static void skip_scan(sl_buf *b, const sl_stage *s, const char *name,
                      const char *lo, const char *stop, const char *most,
                      const char *guard) {
    const char *k = s->fair_key;
    sl_buf_printf(b, "%s AS ((SELECT ", name);
    sl_buf_ident(b, k);
    sl_buf_puts(b, " AS k, 1 AS n");
    due_from(b, s);
    sl_buf_puts(b, " AND ");
    sl_buf_ident(b, k);
    sl_buf_puts(b, " IS NOT NULL");
    if (lo) {
        sl_buf_puts(b, " AND ");
        sl_buf_ident(b, k);
        sl_buf_printf(b, " > %s", lo);
    }
    if (guard) sl_buf_printf(b, " AND %s", guard);
    sl_buf_puts(b, " ORDER BY 1 LIMIT 1) UNION ALL SELECT (SELECT ");
    sl_buf_ident(b, k);
    due_from(b, s);
    sl_buf_puts(b, " AND ");
    sl_buf_ident(b, k);
    sl_buf_printf(b, " > %s.k ORDER BY 1 LIMIT 1), ", name);
    sl_buf_printf(b, "%s.n + 1 FROM %s WHERE %s.k IS NOT NULL AND %s.n < %s",
                  name, name, name, name, most);
    if (stop) sl_buf_printf(b, " AND (%s IS NULL OR %s.k < %s)", stop, name,
                            stop);
    sl_buf_puts(b, ")");
}

/* One key's first jobs in claim order, for the fair LATERAL: an index
 * scan that stops after `per` rows (a window function here would read
 * every job of the key that ties with the last one: a bulk insert gives
 * them all one run_at). */
static void lateral_jobs(sl_buf *b, const sl_stage *s, int null_group) {
    sl_buf_puts(b, " CROSS JOIN LATERAL (SELECT id, priority, run_at,"
                   " attempts, ");
    if (s->limit_key)
        sl_buf_ident(b, s->limit_key);
    else
        sl_buf_puts(b, "NULL::int");
    sl_buf_puts(b, " AS kl");
    due_from(b, s);
    sl_buf_puts(b, " AND ");
    sl_buf_ident(b, s->fair_key);
    sl_buf_puts(b, null_group ? " IS NULL" : " = ks.k");
    sl_buf_puts(b, " ORDER BY priority DESC, run_at, attempts DESC"
                   " LIMIT (SELECT per FROM kn)) x");
}

/* w: the fair candidates. The keys in rotation order from the cursor
 * (pos: keys after it 1.., the NULL group 1000000, keys up to it from
 * 2000001; without a cursor the NULL group comes last, 3000000), at most
 * batch + 3 of them, and of each at most ceil(batch / keys) + 2 jobs in
 * claim order (rf their rank). */
static void fair_window(sl_buf *b, const sl_stage *s,
                        const sl_policy_params *pp) {
    char cur[48], most[48], guard[160];
    snprintf(cur, sizeof cur, "$%d::%s", pp->cursor,
             column_type(s, s->fair_key));
    snprintf(most, sizeof most, "$%d::int + 3", pp->batch);
    snprintf(guard, sizeof guard, "(SELECT count(k) FROM ka) < $%d::int + 3",
             pp->batch);
    /* ka: the keys after the cursor (none without one); kb, when ka falls
     * short: the keys from the first up to the cursor (all without one). */
    sl_buf_puts(b, "WITH RECURSIVE ");
    skip_scan(b, s, "ka", cur, NULL, most, NULL);
    sl_buf_puts(b, ", ");
    skip_scan(b, s, "kb", NULL, cur, most, guard);
    sl_buf_printf(b, ", ks AS (SELECT k, pos FROM (SELECT k, n AS pos FROM ka"
                     " WHERE k IS NOT NULL UNION ALL SELECT NULL, CASE WHEN"
                     " %s IS NULL THEN 3000000 ELSE 1000000 END WHERE EXISTS"
                     " (SELECT 1",
                  cur);
    due_from(b, s);
    sl_buf_puts(b, " AND ");
    sl_buf_ident(b, s->fair_key);
    sl_buf_printf(b, " IS NULL) UNION ALL SELECT k, 2000000 + n FROM kb WHERE"
                     " k IS NOT NULL AND (%s IS NULL OR k <= %s)) a ORDER BY"
                     " pos LIMIT $%d::int + 3), kn AS (SELECT ($%d::int +"
                     " count(*) - 1) / GREATEST(count(*), 1) + 2 AS per FROM"
                     " ks),",
                  cur, cur, pp->batch, pp->batch);
    sl_buf_puts(b, " w AS (SELECT *, row_number() OVER (PARTITION BY pos"
                   " ORDER BY priority DESC, run_at, attempts DESC) AS rf"
                   " FROM (SELECT x.id, x.priority, x.run_at, x.attempts,"
                   " x.kl, ks.pos, ks.k::text AS kt FROM ks");
    lateral_jobs(b, s, 0);
    sl_buf_puts(b, " WHERE ks.k IS NOT NULL UNION ALL SELECT x.id,"
                   " x.priority, x.run_at, x.attempts, x.kl, ks.pos, NULL"
                   " FROM ks");
    lateral_jobs(b, s, 1);
    sl_buf_puts(b, " WHERE ks.k IS NULL) f)");
}

/* busy: the jobs in progress per limit key (a scan of the lease index:
 * as many rows as jobs are running). */
static void busy_cte(sl_buf *b, const sl_stage *s) {
    sl_buf_puts(b, "busy AS MATERIALIZED (SELECT ");
    sl_buf_ident(b, s->limit_key);
    sl_buf_puts(b, " AS k, count(*) AS n FROM ");
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, " WHERE status = 'in_progress' GROUP BY 1)");
}

/* w for a stage with `limit:` and no `fair:`: the first 2 x batch + 64
 * due jobs in claim order whose key is not at its limit already. */
static void limit_window(sl_buf *b, const sl_stage *s,
                         const sl_policy_params *pp) {
    sl_buf_puts(b, "WITH ");
    busy_cte(b, s);
    sl_buf_puts(b, ", w AS (SELECT id, priority, run_at, attempts, ");
    sl_buf_ident(b, s->limit_key);
    sl_buf_puts(b, " AS kl, 1 AS rf, 0 AS pos, NULL::text AS kt");
    due_from(b, s);
    sl_buf_puts(b, " AND NOT EXISTS (SELECT 1 FROM busy WHERE busy.n >= ");
    sl_buf_printf(b, "$%d::int AND busy.k IS NOT DISTINCT FROM ", pp->max);
    sl_buf_ident(b, s->queue);
    sl_buf_puts(b, ".");
    sl_buf_ident(b, s->limit_key);
    sl_buf_printf(b, ") ORDER BY priority DESC, run_at, attempts DESC LIMIT"
                     " $%d::int * 2 + 64)",
                  pp->batch);
}

/* p: the candidates in claim order (o), each with the text of its fair
 * key (kt) and its position in the fair rotation (pos). With a limit, a
 * candidate whose rank within its key plus the key's jobs in progress
 * exceeds limit.max is dropped, and with pp->locks only the keys whose
 * lock this transaction holds remain. */
static void policy_order(sl_buf *b, const sl_stage *s,
                         const sl_policy_params *pp) {
    const char *ord = s->fair_key ? "w.rf, w.pos, " : "";
    sl_buf_puts(b, ", p AS (SELECT w.id, w.kt, w.pos, w.kl, row_number()"
                   " OVER (ORDER BY ");
    sl_buf_printf(b, "%sw.priority DESC, w.run_at, w.attempts DESC) AS o"
                     " FROM ",
                  ord);
    if (!s->limit_key) {
        sl_buf_puts(b, "w)");
        return;
    }
    sl_buf_printf(b, "(SELECT w.*, row_number() OVER (PARTITION BY w.kl"
                     " ORDER BY %sw.priority DESC, w.run_at, w.attempts DESC)"
                     " AS rl FROM w) w LEFT JOIN busy ON busy.k IS NOT"
                     " DISTINCT FROM w.kl WHERE w.rl + COALESCE(busy.n, 0) <="
                     " $%d::int",
                  ord, pp->max);
    if (pp->locks) {
        sl_buf_puts(b, " AND hashtext(COALESCE(w.kl::text, '')) = ANY(");
        sl_buf_printf(b, "$%d::int[])", pp->locks);
    }
    sl_buf_puts(b, ")");
}

/* "WITH ... p AS (...)": the candidates, without locking any row. */
static void policy_ctes(sl_buf *b, const sl_stage *s,
                        const sl_policy_params *pp) {
    if (s->fair_key) {
        fair_window(b, s, pp);
        if (s->limit_key) {
            sl_buf_puts(b, ", ");
            busy_cte(b, s);
        }
    } else {
        limit_window(b, s, pp);
    }
    policy_order(b, s, pp);
}

void sl_queue__policy_candidates(sl_buf *b, const sl_stage *s,
                                 const sl_policy_params *pp) {
    policy_ctes(b, s, pp);
    sl_buf_puts(b, ", c AS (SELECT q.id, q.status AS was, q.started_at IS NOT"
                   " NULL AS resumed, q.run_at AS due, p.kt, p.pos FROM ");
    sl_buf_ident(b, s->queue);
    /* The status test again on q itself: w read a snapshot, and a row
     * another claim took and committed since is not locked any more; the
     * lock re-reads the row and this test then drops it (without it, two
     * workers would run the same job). */
    /* q.id = ANY(...): the candidates' rows by primary key, never a scan
     * of the backlog to join them. */
    sl_buf_printf(b, " q JOIN p ON p.id = q.id WHERE q.id = ANY(ARRAY(SELECT"
                     " id FROM p)) AND q.status IN ('pending','retry') AND"
                     " q.run_at <= now() ORDER BY p.o LIMIT $%d FOR UPDATE OF"
                     " q SKIP LOCKED)",
                  pp->batch);
}

/* $1 batch, $2 limit.max[, $3 the fair cursor]: takes the advisory lock
 * of each key the claim may take jobs from, in claim order, until it
 * holds enough keys to fill the batch; returns the locked keys' hashes
 * (the claim's pp->locks). The lock is transaction-level: the claim runs
 * in the same transaction, after this statement, so its snapshot sees
 * every claim of these keys that committed before. */
void sl_queue__build_claim_lock(sl_buf *b, const sl_stage *s) {
    sl_policy_params pp = {.batch = 1, .max = 2, .locks = 0,
                           .cursor = s->fair_key ? 3 : 0};
    if (!s->limit_key) {
        /* Unused (no limit): a statement that takes no lock. */
        sl_buf_puts(b, "SELECT $1::int, $2::int");
        if (s->fair_key) sl_buf_puts(b, ", $3::text");
        sl_buf_puts(b, " WHERE false");
        return;
    }
    policy_ctes(b, s, &pp);
    /* The keys in the order of their first candidate, each with how many
     * of the batch it can fill; a key is wanted while the keys before it
     * do not fill the batch. */
    sl_buf_puts(b, ", kk AS (SELECT hashtext(COALESCE(p.kl::text, '')) AS h,"
                   " min(p.o) AS first, count(*) AS slots FROM p GROUP BY 1),"
                   " ko AS (SELECT h, first, sum(slots) OVER (ORDER BY first)"
                   " - slots AS before FROM kk) SELECT h FROM (SELECT h FROM"
                   " ko ORDER BY first OFFSET 0) y WHERE"
                   " pg_try_advisory_xact_lock("
                   "hashtext(");
    char lit[200];
    snprintf(lit, sizeof lit, "sluice.limit:%s", s->queue);
    sl_buf_literal(b, lit);
    /* Keys another claim holds are passed over, so the scan goes on
     * until it holds as many keys as the batch needs. */
    sl_buf_puts(b, "), y.h) LIMIT (SELECT count(*) FROM ko WHERE before <"
                   " $1::int)");
}
