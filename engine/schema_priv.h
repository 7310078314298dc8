/* schema_priv.h - what the parts of the DDL generator share (schema.c
 * builds the objects, schema_security.c the grants, the guard trigger and
 * the Row Level Security policies). Not for other modules. */
#ifndef SL_SCHEMA_PRIV_H
#define SL_SCHEMA_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "schema.h"

#define STATS_VIEW "sluice_statistics"
#define ENUM_NAME "job_status"
#define TOUCH_FN "sluice_set_updated_at"
#define POLICY_NAME "sluice_inherit"
#define TRANSITION "new_rows"
/* The dollar quote of generated function bodies; identifiers cannot
 * contain '$', so no body can end it early. */
#define DQ "$sluice$"

typedef struct gen_name {
    char *ns, *name, *what;
} gen_name;

typedef struct builder {
    sl_schema *s;
    size_t cap_tables, cap_objects;
    gen_name *names;
    size_t nnames, cap_names;
    char *err;
    size_t errlen;
    int rc; /* first error; later steps do nothing once set */
    const char *owner;          /* the pipeline whose objects are built */
    const char *const *others;  /* other queues for the view */
    size_t nothers;
} builder;

void sl_schema__fail(builder *b, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sl_schema__derive_name(char out[64], const char *base, const char *suffix);
char *sl_schema__dup(builder *b, const char *s);
char *sl_schema__take(builder *b, sl_buf *buf);
void sl_schema__check_ident(builder *b, const char *s, const char *what,
                            const char *where);
void sl_schema__claim_name(builder *b, const char *ns, const char *name,
                           const char *what);
void sl_schema__add_object(builder *b, sl_obj_kind kind, const char *name,
                           const char *table, int table_index,
                           const char *create, const char *comment_on,
                           const char *replace);
void sl_schema__add_function(builder *b, const char *name, const char *body);
const sl_schema_column *sl_schema__find_column(const sl_schema_table *t,
                                               const char *name);
void sl_schema__add_trigger(builder *b, const char *name, const char *table,
                            const char *timing, const char *rest,
                            const char *fn);

/* schema_index.c: the indexes of queue table t of stage st. */
void sl_schema__build_indexes(builder *b, const sl_schema_table *t,
                              const sl_pipeline *p, const sl_stage *st);

/* schema_view.c: the statistics view over the queue tables built so far. */
void sl_schema__build_view(builder *b);

/* schema_security.c */
void sl_schema__add_grant(builder *b, const char *table, const char *privs);
void sl_schema__build_security(builder *b, const sl_schema_table *t,
                               const sl_pipeline *p);

#endif
