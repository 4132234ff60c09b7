/* services.c - the `dyn_services` table of libdynamo_llm.so.
 *
 * The one exported symbol of the library: the services it offers, in the
 * order `dynamo serve` lists them. A service is added here and nowhere else.
 */
#include "llm/services/services.h"

__attribute__((visibility("default")))
const dyn_service_def_t *const dyn_services[] = {
    &dyn__llm_frontend,
    &dyn__llm_processor,
    &dyn__llm_router,
    &dyn__llm_worker,
    NULL,
};
