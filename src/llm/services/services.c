/* services.c - the `dyn_services` table of libdynamo_llm.so.
 *
 * The services the library offers, in the order `dynamo serve` lists them;
 * a service is added here and nowhere else. The table is the library's one
 * exported symbol besides the public API of the dynamo/llm headers (the library is
 * built with hidden visibility; tests/exports checks it).
 */
#include "llm/services/services.h"

const dyn_service_def_t *const dyn_services[] = {
    &dyn__llm_frontend,
    &dyn__llm_processor,
    &dyn__llm_router,
    &dyn__llm_worker,
    &dyn__llm_prefill_worker,
    NULL,
};
