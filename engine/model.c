/* model.c - look-ups over the immutable model. */
#include "model.h"

#include <string.h>

const sl_pipeline *sl_model_pipeline(const sl_model *m, const char *name) {
    for (size_t i = 0; m && i < m->npipelines; i++)
        if (strcmp(m->pipelines[i].name, name) == 0) return &m->pipelines[i];
    return NULL;
}

const sl_stage *sl_model_stage(const sl_model *m, const char *pipeline,
                               const char *stage) {
    const sl_pipeline *p = sl_model_pipeline(m, pipeline);
    for (size_t i = 0; p && i < p->nstages; i++)
        if (strcmp(p->stages[i].name, stage) == 0) return &p->stages[i];
    return NULL;
}

const sl_stage *sl_model_stage_by_queue(const sl_model *m, const char *queue) {
    for (size_t i = 0; m && i < m->npipelines; i++)
        for (size_t j = 0; j < m->pipelines[i].nstages; j++)
            if (strcmp(m->pipelines[i].stages[j].queue, queue) == 0)
                return &m->pipelines[i].stages[j];
    return NULL;
}
