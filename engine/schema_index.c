/* schema_index.c - the indexes of a queue table: the claim's order, the
 * leases, dedup keys, the subject, references, finished jobs (retention
 * and listings) and a fair stage's key. */
#include <stdio.h>
#include <stdlib.h>

#include "buf.h"
#include "error.h"
#include "schema_priv.h"

static void add_index(builder *b, const char *table, const char *suffix,
                      const char *what, int unique, const char *cols_sql,
                      const char *where_sql) {
    char name[64];
    sl_schema__derive_name(name, table, suffix);
    char desc[200];
    snprintf(desc, sizeof desc, "%s of queue %s", what, table);
    sl_schema__claim_name(b, "relation", name, desc);
    sl_buf q, on, rep;
    sl_buf_init(&q);
    sl_buf_init(&on);
    sl_buf_init(&rep);
    sl_buf_printf(&q, "CREATE %sINDEX IF NOT EXISTS ", unique ? "UNIQUE " : "");
    sl_buf_ident(&q, name);
    sl_buf_puts(&q, " ON ");
    sl_buf_ident(&q, table);
    sl_buf_printf(&q, " (%s)", cols_sql);
    if (where_sql) sl_buf_printf(&q, " WHERE %s", where_sql);
    sl_buf_puts(&q, ";\n");
    sl_buf_puts(&on, "INDEX ");
    sl_buf_ident(&on, name);
    sl_buf_puts(&rep, "DROP INDEX IF EXISTS ");
    sl_buf_ident(&rep, name);
    sl_buf_puts(&rep, ";\n");
    char *sql = sl_schema__take(b, &q), *target = sl_schema__take(b, &on),
         *r = sl_schema__take(b, &rep);
    if (sql && target && r)
        sl_schema__add_object(b, SL_OBJ_INDEX, name, table, -1, sql, target, r);
    free(sql);
    free(target);
    free(r);
}

void sl_schema__build_indexes(builder *b, const sl_schema_table *t,
                              const sl_pipeline *p, const sl_stage *st) {
    sl_buf c, w;
    sl_buf_init(&c);
    sl_buf_init(&w);

    /* A history table (t->history) gets the listing, finished and subject
     * indexes only: nothing claims from it. */
    if (t->history) goto listing;

    /* The claim's order (queue.c): attempts last, so that a rescued job
     * goes ahead of the jobs that share its run_at. */
    sl_buf_ident(&c, "priority");
    sl_buf_puts(&c, " DESC, ");
    sl_buf_ident(&c, "run_at");
    sl_buf_puts(&c, ", ");
    sl_buf_ident(&c, "attempts");
    sl_buf_puts(&c, " DESC");
    sl_buf_ident(&w, "status");
    sl_buf_puts(&w, " IN ('pending', 'retry')");
    add_index(b, t->name, "claim_idx", "claim index", 0, sl_buf_str(&c),
              sl_buf_str(&w));
    sl_buf_free(&c);
    sl_buf_free(&w);

    sl_buf_ident(&c, "locked_until");
    sl_buf_ident(&w, "status");
    sl_buf_puts(&w, " = 'in_progress'");
    add_index(b, t->name, "lease_idx", "lease index", 0, sl_buf_str(&c),
              sl_buf_str(&w));
    sl_buf_free(&c);
    sl_buf_free(&w);

    sl_buf_ident(&c, "dedup_key");
    sl_buf_ident(&w, "dedup_key");
    sl_buf_puts(&w, " IS NOT NULL");
    add_index(b, t->name, "dedup_key", "dedup index", 1, sl_buf_str(&c),
              sl_buf_str(&w));
    sl_buf_free(&c);
    sl_buf_free(&w);

    /* Unique jobs (jobs.c): a second job with the same unique_key is
     * refused by this index while the first is in the stage's `while`
     * state (sl_unique_predicate), so concurrent enqueues cannot both
     * insert. */
    sl_buf_ident(&c, "unique_key");
    sl_buf_ident(&w, "unique_key");
    sl_buf_puts(&w, sl_unique_predicate(st->unique_while));
    add_index(b, t->name, "unique_key", "unique-job index", 1, sl_buf_str(&c),
              sl_buf_str(&w));
    sl_buf_free(&c);
    sl_buf_free(&w);

listing:
    /* Finished jobs by when they finished: retention deletes the oldest
     * first and listings show the newest first, without a scan over
     * millions of historical rows. finished_at is set exactly while a
     * job is done, error or cancelled (queue_sql.c, jobs.c); the predicate
     * names no status because a migration that adds a job_status value
     * cannot use it in the same transaction. */
    sl_buf_ident(&c, "finished_at");
    sl_buf_ident(&w, "finished_at");
    sl_buf_puts(&w, " IS NOT NULL");
    add_index(b, t->name, "finished_idx", "finished index", 0, sl_buf_str(&c),
              sl_buf_str(&w));
    sl_buf_free(&c);
    sl_buf_free(&w);

    /* Listings (`sluice jobs`, GET /api/jobs) read each status's newest
     * jobs and the statistics view counts by status (reads.c, schema.c):
     * with this index neither scans the finished jobs a queue keeps. */
    sl_buf_ident(&c, "status");
    sl_buf_puts(&c, ", ");
    sl_buf_ident(&c, "created_at");
    sl_buf_puts(&c, ", ");
    sl_buf_ident(&c, "id");
    add_index(b, t->name, "listing_idx", "listing index", 0, sl_buf_str(&c),
              NULL);
    sl_buf_free(&c);

    /* A fair claim walks the distinct keys with due jobs (a skip scan:
     * one probe per key) and reads each key's first jobs in claim order
     * (queue_sql_policy.c); this index serves both. */
    if (st->fair_key && !t->history) {
        sl_buf_ident(&c, st->fair_key);
        sl_buf_puts(&c, ", ");
        sl_buf_ident(&c, "priority");
        sl_buf_puts(&c, " DESC, ");
        sl_buf_ident(&c, "run_at");
        sl_buf_puts(&c, ", ");
        sl_buf_ident(&c, "attempts");
        sl_buf_puts(&c, " DESC");
        sl_buf_ident(&w, "status");
        sl_buf_puts(&w, " IN ('pending', 'retry')");
        add_index(b, t->name, "fair_idx", "fair-share index", 0,
                  sl_buf_str(&c), sl_buf_str(&w));
        sl_buf_free(&c);
        sl_buf_free(&w);
    }

    if (p->has_subject) {
        sl_buf_ident(&c, p->subject.fk);
        add_index(b, t->name, "subject_idx", "subject index", 0, sl_buf_str(&c),
                  NULL);
        sl_buf_free(&c);
    }
    for (size_t i = 0; i < t->ncolumns && !t->history; i++) {
        const sl_schema_column *col = &t->columns[i];
        if (col->engine || !col->ref_table) continue;
        char suffix[80];
        snprintf(suffix, sizeof suffix, "%s_idx", col->name);
        sl_buf_ident(&c, col->name);
        add_index(b, t->name, suffix, "reference index", 0, sl_buf_str(&c),
                  NULL);
        sl_buf_free(&c);
    }
    if (sl_buf_failed(&c) || sl_buf_failed(&w))
        sl_schema__fail(b, -SL_ENOMEM, "out of memory");
}
