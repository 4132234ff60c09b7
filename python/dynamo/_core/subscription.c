/* subscription.c - dynamo._core.Subscription: a callback subscribed to an
 * event subject.
 *
 * The object has no methods: it is what keeps the callback alive, and the
 * Runtime keeps it for its own lifetime, since the subscription lasts until
 * the runtime closes (there is no unsubscribe from Python).
 */
#include "core.h"

typedef struct {
  PyObject_HEAD
  PyObject *callback; /* fn(subject: str, data: bytes) */
} SubscriptionObject;

static void on_event(const char *subject, const void *data, size_t len, void *ud) {
  SubscriptionObject *s = ud;
  PyObject *res = PyObject_CallFunction(s->callback, "sy#", subject, (const char *)data,
                                        (Py_ssize_t)len);
  if (!res) core_report_callback_error("dynamo subscription callback");
  Py_XDECREF(res);
}

PyObject *core_subscription_new(dyn_runtime_t *rt, const char *subject, PyObject *callback) {
  SubscriptionObject *s = PyObject_New(SubscriptionObject, &SubscriptionType);
  if (!s) return NULL;
  Py_INCREF(callback);
  s->callback = callback;
  /* No handle: nothing unsubscribes, and the runtime frees the
   * subscription when it closes. */
  int rc = dyn_subscribe(rt, subject, on_event, s, NULL);
  if (rc) {
    Py_DECREF(s);
    return core_raise_status(rc, rc == DYN_EINVAL ? "invalid subject" : NULL);
  }
  return (PyObject *)s;
}

static void Subscription_dealloc(SubscriptionObject *s) {
  Py_XDECREF(s->callback);
  PyObject_Free(s);
}

PyTypeObject SubscriptionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Subscription",
    .tp_basicsize = sizeof(SubscriptionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Subscription_dealloc};
