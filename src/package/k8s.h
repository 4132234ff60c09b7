/* k8s.h - Kubernetes objects for a built artifact (`dynamo deploy`).
 *
 * Plain Kubernetes, no operator: per service a Deployment whose pods each
 * run one worker (`dynamo serve /app --service-name SVC`, workers forced to
 * 1, replicas = the service's workers), a Service per HTTP-exposed
 * service, a ConfigMap with the merged config, and, unless existing ones
 * are named, etcd and NATS as a StatefulSet and a Service each.
 *
 * Every pod listens for the request plane on DYN_K8S_LISTEN_PORT and
 * advertises its pod IP (downward API), and serves the worker health
 * endpoints on DYN_K8S_HEALTH_PORT for the liveness and readiness probes.
 */
#ifndef DYN__PACKAGE_K8S_H
#define DYN__PACKAGE_K8S_H

#include <jansson.h>
#include <stddef.h>

#define DYN_K8S_LISTEN_PORT 9345
#define DYN_K8S_HEALTH_PORT 9346
#define DYN_K8S_ETCD_IMAGE "quay.io/coreos/etcd:v3.5.17"
#define DYN_K8S_NATS_IMAGE "nats:2.10-alpine"

typedef struct dyn__k8s_opts {
  const char *ns;          /* metadata.namespace, or NULL for kubectl's current one */
  const char *image;       /* the artifact's image (with dynamo and the artifact in /app) */
  const char *etcd;        /* an existing etcd (URL), or NULL: deploy one */
  const char *nats;        /* an existing NATS (URL), or NULL: deploy one */
  const char *config_yaml; /* the ConfigMap's config.yaml */
} dyn__k8s_opts_t;

/* The objects for manifest (an artifact's dynamo.yaml as JSON), as a JSON
 * array of documents in apply order. DYN_EINVAL, with the reason in err,
 * for what Kubernetes would refuse (a bad resource quantity, a port that
 * clashes with the fixed ones) and for two services that would get the
 * same object or pod selector (names equal but for case or '_'/'-'). */
int dyn__k8s_objects(json_t *manifest, const dyn__k8s_opts_t *o, json_t **out, char *err,
                     size_t errlen);

/* True when s is a Kubernetes resource quantity ("500m", "1.5", "2Gi", "1e3"). */
int dyn__k8s_quantity_ok(const char *s);

#endif
