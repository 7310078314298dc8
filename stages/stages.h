/* stages.h - the built-in stage handlers.
 *
 * The core knows handlers only through its registry (engine/handler.h);
 * this layer fills it. A program calls sl_stages_register_builtin() once,
 * before it loads or runs a pipeline (the CLI and the tests do).
 */
#ifndef SL_STAGES_H
#define SL_STAGES_H

/* Registers every built-in handler (noop, lua, local.transcribe,
 * assemblyai.upload, assemblyai.transcribe, llm.analyze, llm.generate,
 * http). Idempotent; not thread-safe. */
void sl_stages_register_builtin(void);

#endif
