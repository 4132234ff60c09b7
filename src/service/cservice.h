/* cservice.h - loading C services from a shared object: their plan for the
 * supervisor and the worker that runs one of them. */
#ifndef DYN__CSERVICE_H
#define DYN__CSERVICE_H
#include <jansson.h>

#include "dynamo/service.h"

/* Splits "path/lib.so:Svc"; returns 1 if target names a shared object. */
int dyn__is_c_target(const char *target);
/* The graph reachable from svc in so_path as the plan JSON that
 * `python -m dynamo.sdk.plan` prints for Python graphs. On error, prints
 * the reason to stderr. */
int dyn__c_plan(const char *so_path, const char *svc, json_t *config, json_t **plan_out);
/* `dynamo worker lib.so:Entry --service NAME`: runs one worker. */
int dyn__c_worker(const char *target, const char *service);
#endif
