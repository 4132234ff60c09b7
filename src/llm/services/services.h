/* services.h - the C services of libdynamo_llm.so.
 *
 * Each service's definition lives in its own file; services.c gathers them
 * into the `dyn_services` table that `dynamo serve libdynamo_llm.so:X` and
 * c_service(...) load (see dynamo/service.h).
 */
#ifndef DYN__LLM_SERVICES_H
#define DYN__LLM_SERVICES_H

#include "dynamo/service.h"

/* The OpenAI-compatible HTTP API (frontend.c). */
extern const dyn_service_def_t dyn__llm_frontend;
/* Tokenizer, chat template, detokenizer; picks the worker (processor.c). */
extern const dyn_service_def_t dyn__llm_processor;
/* KV-aware choice of a worker (router.c). */
extern const dyn_service_def_t dyn__llm_router;
/* The simulated engine behind an endpoint (worker.c). */
extern const dyn_service_def_t dyn__llm_worker;
/* The prefill role of disaggregated serving (worker.c, disagg.c). */
extern const dyn_service_def_t dyn__llm_prefill_worker;

#endif
