/* cplan.h - the plan of a graph of C services (cplan.c). */
#ifndef DYN__SERVE_CPLAN_H
#define DYN__SERVE_CPLAN_H
#include <jansson.h>

/* 1 if target names a service in a shared object: "path/lib.so:Svc". */
int dyn__is_c_target(const char *target);
/* The graph reachable from svc in so_path as the plan JSON that
 * `python -m dynamo.sdk.plan` prints for Python graphs. On error, prints
 * the reason to stderr. */
int dyn__c_plan(const char *so_path, const char *svc, json_t *config, json_t **plan_out);
#endif
