/* names.c - the namespace -> component -> endpoint tree.
 *
 * Objects are interned per runtime so that asking for a name twice returns
 * the same pointer; they live until the runtime is destroyed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

int dyn__name_valid(const char *name) {
  if (!name) return 0;
  size_t n = strlen(name);
  if (n == 0 || n > DYN__NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

int dyn_runtime_namespace(dyn_runtime_t *rt, const char *name, dyn_namespace_t **out) {
  if (!dyn__name_valid(name)) return DYN_EINVAL;
  for (dyn_namespace_t *ns = rt->namespaces; ns; ns = ns->next)
    if (!strcmp(ns->name, name)) return *out = ns, DYN_OK;
  dyn_namespace_t *ns = calloc(1, sizeof *ns);
  if (!ns) return DYN_ENOMEM;
  ns->rt = rt;
  snprintf(ns->name, sizeof ns->name, "%s", name);
  ns->next = rt->namespaces;
  rt->namespaces = ns;
  *out = ns;
  return DYN_OK;
}

int dyn_namespace_component(dyn_namespace_t *ns, const char *name, dyn_component_t **out) {
  if (!dyn__name_valid(name)) return DYN_EINVAL;
  for (dyn_component_t *c = ns->components; c; c = c->next)
    if (!strcmp(c->name, name)) return *out = c, DYN_OK;
  dyn_component_t *c = calloc(1, sizeof *c);
  if (!c) return DYN_ENOMEM;
  c->ns = ns;
  snprintf(c->name, sizeof c->name, "%s", name);
  c->next = ns->components;
  ns->components = c;
  *out = c;
  return DYN_OK;
}

int dyn_component_endpoint(dyn_component_t *c, const char *name, dyn_endpoint_t **out) {
  if (!dyn__name_valid(name)) return DYN_EINVAL;
  for (dyn_endpoint_t *ep = c->endpoints; ep; ep = ep->next)
    if (!strcmp(ep->name, name)) return *out = ep, DYN_OK;
  dyn_endpoint_t *ep = calloc(1, sizeof *ep);
  if (!ep) return DYN_ENOMEM;
  ep->component = c;
  snprintf(ep->name, sizeof ep->name, "%s", name);
  int n = snprintf(ep->path, sizeof ep->path, "%s/%s/%s", c->ns->name, c->name, name);
  ep->path_len = (uint16_t)n;
  ep->next = c->endpoints;
  c->endpoints = ep;
  *out = ep;
  return DYN_OK;
}

int dyn_runtime_endpoint(dyn_runtime_t *rt, const char *path, dyn_endpoint_t **out) {
  char buf[DYN__PATH_MAX];
  if (!path || strlen(path) >= sizeof buf) return DYN_EINVAL;
  snprintf(buf, sizeof buf, "%s", path);
  char *c1 = strchr(buf, '/');
  char *c2 = c1 ? strchr(c1 + 1, '/') : NULL;
  if (!c2) return DYN_EINVAL;
  *c1 = *c2 = 0;
  dyn_namespace_t *ns;
  dyn_component_t *comp;
  int rc = dyn_runtime_namespace(rt, buf, &ns);
  if (!rc) rc = dyn_namespace_component(ns, c1 + 1, &comp);
  if (!rc) rc = dyn_component_endpoint(comp, c2 + 1, out);
  return rc;
}

const char *dyn_namespace_name(const dyn_namespace_t *ns) { return ns->name; }
const char *dyn_component_name(const dyn_component_t *c) { return c->name; }
dyn_namespace_t *dyn_component_namespace(const dyn_component_t *c) { return c->ns; }
const char *dyn_endpoint_name(const dyn_endpoint_t *ep) { return ep->name; }
const char *dyn_endpoint_path(const dyn_endpoint_t *ep) { return ep->path; }
dyn_component_t *dyn_endpoint_component(const dyn_endpoint_t *ep) { return ep->component; }
dyn_runtime_t *dyn_endpoint_runtime(const dyn_endpoint_t *ep) { return ep->component->ns->rt; }

void dyn__names_free(dyn_runtime_t *rt) {
  while (rt->namespaces) {
    dyn_namespace_t *ns = rt->namespaces;
    rt->namespaces = ns->next;
    while (ns->components) {
      dyn_component_t *c = ns->components;
      ns->components = c->next;
      while (c->endpoints) {
        dyn_endpoint_t *ep = c->endpoints;
        c->endpoints = ep->next;
        free(ep);
      }
      free(c);
    }
    free(ns);
  }
}
