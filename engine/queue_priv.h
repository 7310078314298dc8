/* queue_priv.h - what queue.c (preparing and running the statements)
 * shares with queue_sql.c (building them). Not for other modules. */
#ifndef SL_QUEUE_PRIV_H
#define SL_QUEUE_PRIV_H

#include <stddef.h>

#include "buf.h"
#include "model.h"

/* The statements of a stage, one per operation. */
enum {
    OP_CLAIM,
    OP_COMPLETE,
    OP_FAIL,
    OP_SNOOZE,
    OP_CHECKPOINT,
    OP_PROGRESS,
    OP_HEARTBEAT,
    OP_RESCUE,
    OP_NEXT_DUE,
    OP_STALE,
    OP_UNFINISHED,
    OP_CLAIM_BARE,
    OP_INPUT,
    OP_REQUESTER,
    OP_PURGE,
    OP_PURGE_COUNT,
    OP_CLAIM_LOCK,
    OP__COUNT
};

/* The operations' names, as in statement names ("claim"). */
extern const char *const sl_queue__op_names[OP__COUNT];

/* Appends the text of one operation's statement for stage s. */
typedef void (*sl_queue__builder)(sl_buf *, const sl_stage *);
extern const sl_queue__builder sl_queue__builders[OP__COUNT];

/* Where the claim's policy values are bound: batch size, limit.max, the
 * locked keys' hashes (int[], 0: no filter) and the fair cursor (the
 * last key served, as text; 0: not fair). */
typedef struct sl_policy_params {
    int batch, max, locks, cursor;
} sl_policy_params;

/* queue_sql_policy.c: "WITH ..., c AS (...)" for a stage with `fair:` or
 * `limit:` (c shaped as the plain claim's, plus kt, the fair key as text,
 * and pos, its place in the rotation), and the statement of OP_CLAIM_LOCK. */
void sl_queue__policy_candidates(sl_buf *b, const sl_stage *s,
                                 const sl_policy_params *pp);
void sl_queue__build_claim_lock(sl_buf *b, const sl_stage *s);
/* The parameter numbers of the claim of s (queue_sql.c). */
void sl_queue__claim_policy_params(const sl_stage *s, sl_policy_params *pp);

int sl_queue__claim_subject_values(const sl_stage *s, const char **vals,
                                   char progress[12]);
int sl_queue__claim_touches_subject(const sl_stage *s);
int sl_queue__claim_limit_param(const sl_stage *s);
int sl_queue__has_mapping(const sl_stage *s, const sl_mapping *m);
int sl_queue__mapping_values(const sl_subject *subj, const sl_mapping *m,
                             const char **vals, char progress[12]);
void sl_queue__stmt_name(const sl_stage *s, int op, char *out, size_t n);

#endif
