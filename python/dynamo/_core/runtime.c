/* runtime.c - dynamo._core.Runtime: one dyn_runtime_t, its loop driven by
 * asyncio through fileno() and poll(), and the factory for everything that
 * hangs off it (served endpoints, clients, subscriptions, HTTP servers).
 *
 * Closing (close() or deallocation) frees the C clients first, so a Client
 * that outlives its runtime is a closed one, never a dangling pointer.
 */
#include "core.h"

typedef struct {
  PyObject_HEAD
  dyn_runtime_t *rt;  /* NULL once closed */
  PyObject *handlers; /* list: keeps endpoint handlers alive */
  PyObject *clients;  /* list: their C clients are freed with the runtime */
  PyObject *subs;     /* list: keeps subscription callbacks alive */
} RuntimeObject;

#define CHECK_RT(self)                                                      \
  do {                                                                      \
    if (!(self)->rt) return core_raise_status(DYN_ECLOSED, "runtime is closed"); \
  } while (0)

static int Runtime_init(RuntimeObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"control_socket", "listen_host", "advertise_host", NULL};
  const char *cs = NULL, *lh = NULL, *ah = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|zzz", kwlist, &cs, &lh, &ah)) return -1;
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  if (cs) o.control_socket = cs;
  if (lh) o.listen_host = lh;
  if (ah) o.advertise_host = ah;
  int rc = dyn_runtime_create(&o, &self->rt);
  if (rc) {
    core_raise_status(rc, rc == DYN_ECONTROL ? "cannot join the control plane (is `dynamo serve` "
                                                "or `dynamo control` running?)"
                                              : NULL);
    return -1;
  }
  self->handlers = PyList_New(0);
  self->clients = PyList_New(0);
  self->subs = PyList_New(0);
  return self->handlers && self->clients && self->subs ? 0 : -1;
}

static void runtime_close(RuntimeObject *self) {
  if (!self->rt) return;
  if (self->clients) {
    Py_ssize_t n = PyList_GET_SIZE(self->clients);
    for (Py_ssize_t i = 0; i < n; i++) core_client_close(PyList_GET_ITEM(self->clients, i));
  }
  dyn_runtime_destroy(self->rt);
  self->rt = NULL;
}

static void Runtime_dealloc(RuntimeObject *self) {
  runtime_close(self);
  Py_XDECREF(self->handlers);
  Py_XDECREF(self->clients);
  Py_XDECREF(self->subs);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Runtime_fileno(RuntimeObject *self, PyObject *unused) {
  CHECK_RT(self);
  return PyLong_FromLong(dyn_runtime_backend_fd(self->rt));
}

/* One non-blocking pass; returns the ms until the loop's next timer. The
 * callbacks report their own exceptions; one still set is raised here
 * rather than returned alongside a result. */
static PyObject *Runtime_poll(RuntimeObject *self, PyObject *unused) {
  CHECK_RT(self);
  dyn_runtime_poll(self->rt);
  if (PyErr_Occurred()) return NULL;
  return PyLong_FromLong(dyn_runtime_backend_timeout(self->rt));
}

static PyObject *Runtime_flush(RuntimeObject *self, PyObject *unused) {
  if (self->rt) dyn_runtime_flush(self->rt);
  Py_RETURN_NONE;
}

static PyObject *Runtime_serve(RuntimeObject *self, PyObject *args) {
  const char *path;
  PyObject *handler;
  if (!PyArg_ParseTuple(args, "sO", &path, &handler)) return NULL;
  CHECK_RT(self);
  if (!PyCallable_Check(handler)) return PyErr_Format(PyExc_TypeError, "handler must be callable");
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(self->rt, path, &ep);
  if (rc)
    return core_raise_status(
        rc, rc == DYN_EINVAL ? "endpoint path must be namespace/component/endpoint" : NULL);
  if (PyList_Append(self->handlers, handler)) return NULL;
  rc = dyn_endpoint_serve(ep, core_on_request, handler);
  if (rc) return core_raise_status(rc, NULL);
  Py_RETURN_NONE;
}

static PyObject *Runtime_client(RuntimeObject *self, PyObject *args) {
  const char *path;
  if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
  CHECK_RT(self);
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(self->rt, path, &ep);
  if (rc)
    return core_raise_status(
        rc, rc == DYN_EINVAL ? "endpoint path must be namespace/component/endpoint" : NULL);
  PyObject *co = core_client_new((PyObject *)self, ep);
  if (!co) return NULL;
  if (PyList_Append(self->clients, co)) {
    Py_DECREF(co);
    return NULL;
  }
  return co;
}

static PyObject *Runtime_subscribe(RuntimeObject *self, PyObject *args) {
  const char *subject;
  PyObject *cb;
  if (!PyArg_ParseTuple(args, "sO", &subject, &cb)) return NULL;
  CHECK_RT(self);
  PyObject *s = core_subscription_new(self->rt, subject, cb);
  if (!s) return NULL;
  if (PyList_Append(self->subs, s)) {
    Py_DECREF(s);
    return NULL;
  }
  return s;
}

static PyObject *Runtime_publish(RuntimeObject *self, PyObject *args) {
  const char *subject;
  Py_buffer data;
  if (!PyArg_ParseTuple(args, "sy*", &subject, &data)) return NULL;
  if (!self->rt) {
    PyBuffer_Release(&data);
    return core_raise_status(DYN_ECLOSED, "runtime is closed");
  }
  int rc = dyn_publish(self->rt, subject, data.buf, (size_t)data.len);
  PyBuffer_Release(&data);
  if (rc) return core_raise_status(rc, NULL);
  Py_RETURN_NONE;
}

static PyObject *Runtime_http_server(RuntimeObject *self, PyObject *args) {
  const char *host;
  int port;
  if (!PyArg_ParseTuple(args, "si", &host, &port)) return NULL;
  CHECK_RT(self);
  return core_http_server_start(dyn_runtime_loop(self->rt), host, port);
}

/* Shutting down calls back into Python (cancel callbacks, stream ends).
 * Each callback reports its own exception; should one still be set, the
 * shutdown has happened all the same, so it does not fail. */
static PyObject *Runtime_shutdown(RuntimeObject *self, PyObject *args) {
  int grace = 5000;
  if (!PyArg_ParseTuple(args, "|i", &grace)) return NULL;
  CHECK_RT(self);
  int n = dyn_runtime_shutdown(self->rt, grace);
  if (PyErr_Occurred()) PyErr_Clear();
  return PyLong_FromLong(n);
}

static PyObject *Runtime_drain(RuntimeObject *self, PyObject *unused) {
  CHECK_RT(self);
  dyn_runtime_drain(self->rt);
  Py_RETURN_NONE;
}

static PyObject *Runtime_close(RuntimeObject *self, PyObject *unused) {
  runtime_close(self);
  Py_RETURN_NONE;
}

static PyObject *Runtime_get_instance_id(RuntimeObject *self, void *c) {
  CHECK_RT(self);
  return PyLong_FromUnsignedLongLong(dyn_runtime_instance_id(self->rt));
}
static PyObject *Runtime_get_address(RuntimeObject *self, void *c) {
  CHECK_RT(self);
  return PyUnicode_FromString(dyn_runtime_address(self->rt));
}
static PyObject *Runtime_get_inflight(RuntimeObject *self, void *c) {
  return PyLong_FromSize_t(self->rt ? dyn_runtime_inflight(self->rt) : 0);
}

/* For /health (dynamo/sdk/health.py): discovery holds our registrations. */
static PyObject *Runtime_get_registered(RuntimeObject *self, void *c) {
  return PyBool_FromLong(self->rt && dyn_runtime_registered(self->rt));
}

static PyMethodDef Runtime_methods[] = {
    {"fileno", (PyCFunction)Runtime_fileno, METH_NOARGS, "The loop's pollable fd."},
    {"poll", (PyCFunction)Runtime_poll, METH_NOARGS, "Run one non-blocking pass; return ms to the next timer (-1: none)."},
    {"flush", (PyCFunction)Runtime_flush, METH_NOARGS, "Write queued frames now."},
    {"serve", (PyCFunction)Runtime_serve, METH_VARARGS, "serve(path, handler): handler(Request) per request."},
    {"client", (PyCFunction)Runtime_client, METH_VARARGS, "client(path) -> Client"},
    {"subscribe", (PyCFunction)Runtime_subscribe, METH_VARARGS, "subscribe(subject, fn(subject, data))"},
    {"publish", (PyCFunction)Runtime_publish, METH_VARARGS, "publish(subject, data)"},
    {"shutdown", (PyCFunction)Runtime_shutdown, METH_VARARGS, "Graceful shutdown (drives the loop); returns requests cancelled."},
    {"http_server", (PyCFunction)Runtime_http_server, METH_VARARGS, "http_server(host, port) -> HttpServer on this loop"},
    {"drain", (PyCFunction)Runtime_drain, METH_NOARGS, "Deregister and stop accepting; in-flight requests go on."},
    {"close", (PyCFunction)Runtime_close, METH_NOARGS, "Free the runtime."},
    {NULL}};

static PyGetSetDef Runtime_getset[] = {
    {"instance_id", (getter)Runtime_get_instance_id, NULL, "this process's instance id", NULL},
    {"address", (getter)Runtime_get_address, NULL, "host:port callers reach", NULL},
    {"inflight", (getter)Runtime_get_inflight, NULL, "requests being served", NULL},
    {"registered", (getter)Runtime_get_registered, NULL, "discovery holds every registration", NULL},
    {NULL}};

PyTypeObject RuntimeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Runtime",
    .tp_basicsize = sizeof(RuntimeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Runtime_init,
    .tp_dealloc = (destructor)Runtime_dealloc,
    .tp_methods = Runtime_methods,
    .tp_getset = Runtime_getset,
    .tp_doc = "One dynamo runtime: a loop, a listener, a control-plane session."};
