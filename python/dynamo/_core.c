/* _core.c - the CPython extension over libdynamo.
 *
 * Everything runs on the asyncio thread with the GIL held: Python drives the
 * C loop (Runtime.poll() when the loop's fd is readable or its timer is due)
 * and C calls back into Python from inside poll(). No thread hand-off, no
 * GIL release and reacquire per message. The Python layer (dynamo/runtime.py)
 * turns these objects into awaitables and async iterators.
 *
 * Ownership: while a request is open the C side holds a reference to its
 * Request object (for the cancel callback); while a stream is open it holds
 * a reference to its Stream object (for data and done callbacks).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <sys/prctl.h>

#include "dynamo/dynamo.h"
#include "dynamo/http.h"

static PyObject *DynamoError;

static PyObject *raise_status(int status, const char *message) {
  PyObject *args = Py_BuildValue("(is)", status, message ? message : dyn_strerror(status));
  if (args) {
    PyErr_SetObject(DynamoError, args);
    Py_DECREF(args);
  }
  return NULL;
}

/* Reports an exception raised by a Python callback that C cannot pass up. */
static void report_callback_error(const char *where) {
  if (!PyErr_Occurred()) return;
  PyErr_WriteUnraisable(PyUnicode_FromString(where));
}

/* ---- Runtime ----------------------------------------------------------- */

typedef struct {
  PyObject_HEAD
  dyn_runtime_t *rt;
  PyObject *handlers; /* list: keeps endpoint handlers alive */
  PyObject *clients;  /* list: freed with the runtime */
  PyObject *subs;     /* list */
} RuntimeObject;

static PyTypeObject RuntimeType, RequestType, ClientType, StreamType, SubscriptionType;

#define CHECK_RT(self)                                     \
  do {                                                     \
    if (!(self)->rt) return raise_status(DYN_ECLOSED, "runtime is closed"); \
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
    raise_status(rc, "cannot join the control plane (is `dynamo serve` or `dynamo control` running?)");
    return -1;
  }
  self->handlers = PyList_New(0);
  self->clients = PyList_New(0);
  self->subs = PyList_New(0);
  return self->handlers && self->clients && self->subs ? 0 : -1;
}

static void free_clients(RuntimeObject *self);

static void Runtime_dealloc(RuntimeObject *self) {
  if (self->rt) {
    free_clients(self);
    dyn_runtime_destroy(self->rt);
    self->rt = NULL;
  }
  Py_XDECREF(self->handlers);
  Py_XDECREF(self->clients);
  Py_XDECREF(self->subs);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Runtime_fileno(RuntimeObject *self, PyObject *unused) {
  CHECK_RT(self);
  return PyLong_FromLong(dyn_runtime_backend_fd(self->rt));
}

/* One non-blocking pass; returns the ms until the loop's next timer. */
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

typedef struct {
  PyObject_HEAD
  dyn_request_t *req;
  PyObject *body;
  PyObject *on_cancel;
  RuntimeObject *runtime;
  int cancelled;
} RequestObject;

static void on_request_cancel(dyn_request_t *req, void *ud) {
  RequestObject *r = ud;
  r->cancelled = 1;
  if (r->on_cancel && r->on_cancel != Py_None) {
    PyObject *res = PyObject_CallNoArgs(r->on_cancel);
    if (!res) report_callback_error("dynamo request cancel callback");
    Py_XDECREF(res);
  }
}

static void on_request(dyn_request_t *req, const void *body, size_t len, void *ud) {
  PyObject *handler = ud;
  RequestObject *r = PyObject_New(RequestObject, &RequestType);
  if (!r) {
    PyErr_Clear();
    dyn_request_fail(req, "out of memory");
    return;
  }
  r->req = req;
  r->on_cancel = NULL;
  r->cancelled = 0;
  r->runtime = NULL;
  r->body = PyBytes_FromStringAndSize(body, (Py_ssize_t)len);
  if (!r->body) {
    PyErr_Clear();
    r->req = NULL;
    Py_DECREF(r);
    dyn_request_fail(req, "out of memory");
    return;
  }
  /* The C side's reference, dropped when the request is finished. */
  Py_INCREF(r);
  dyn_request_set_data(req, r);
  dyn_request_on_cancel(req, on_request_cancel, r);
  PyObject *res = PyObject_CallOneArg(handler, (PyObject *)r);
  if (!res) {
    report_callback_error("dynamo endpoint handler");
    if (r->req) {
      dyn_request_fail(r->req, "handler raised an exception");
      r->req = NULL;
      Py_DECREF(r);
    }
  }
  Py_XDECREF(res);
  Py_DECREF(r);
}

static PyObject *Runtime_serve(RuntimeObject *self, PyObject *args) {
  const char *path;
  PyObject *handler;
  if (!PyArg_ParseTuple(args, "sO", &path, &handler)) return NULL;
  CHECK_RT(self);
  if (!PyCallable_Check(handler)) return PyErr_Format(PyExc_TypeError, "handler must be callable");
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(self->rt, path, &ep);
  if (rc) return raise_status(rc, "endpoint path must be namespace/component/endpoint");
  if (PyList_Append(self->handlers, handler)) return NULL;
  rc = dyn_endpoint_serve(ep, on_request, handler);
  if (rc) return raise_status(rc, NULL);
  Py_RETURN_NONE;
}

typedef struct {
  PyObject_HEAD
  dyn_client_t *c;
  RuntimeObject *runtime;
  PyObject *on_change;
} ClientObject;

static void on_instances(dyn_client_t *c, void *ud) {
  ClientObject *co = ud;
  if (!co->on_change || co->on_change == Py_None) return;
  PyObject *res = PyObject_CallNoArgs(co->on_change);
  if (!res) report_callback_error("dynamo client on_change");
  Py_XDECREF(res);
}

static PyObject *Runtime_client(RuntimeObject *self, PyObject *args) {
  const char *path;
  if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
  CHECK_RT(self);
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(self->rt, path, &ep);
  if (rc) return raise_status(rc, "endpoint path must be namespace/component/endpoint");
  ClientObject *co = PyObject_New(ClientObject, &ClientType);
  if (!co) return NULL;
  co->runtime = self;
  co->on_change = NULL;
  Py_INCREF(self);
  rc = dyn_endpoint_client(ep, &co->c);
  if (rc) {
    co->c = NULL;
    Py_DECREF(co);
    return raise_status(rc, NULL);
  }
  dyn_client_on_change(co->c, on_instances, co);
  if (PyList_Append(self->clients, (PyObject *)co)) {
    Py_DECREF(co);
    return NULL;
  }
  return (PyObject *)co;
}

static void free_clients(RuntimeObject *self) {
  if (!self->clients) return;
  Py_ssize_t n = PyList_GET_SIZE(self->clients);
  for (Py_ssize_t i = 0; i < n; i++) {
    ClientObject *co = (ClientObject *)PyList_GET_ITEM(self->clients, i);
    if (co->c) {
      dyn_client_free(co->c);
      co->c = NULL;
    }
  }
}

typedef struct {
  PyObject_HEAD
  dyn_subscription_t *sub;
  PyObject *callback;
} SubscriptionObject;

static void on_event(const char *subject, const void *data, size_t len, void *ud) {
  SubscriptionObject *s = ud;
  PyObject *res = PyObject_CallFunction(s->callback, "sy#", subject, (const char *)data,
                                        (Py_ssize_t)len);
  if (!res) report_callback_error("dynamo subscription callback");
  Py_XDECREF(res);
}

static PyObject *Runtime_subscribe(RuntimeObject *self, PyObject *args) {
  const char *subject;
  PyObject *cb;
  if (!PyArg_ParseTuple(args, "sO", &subject, &cb)) return NULL;
  CHECK_RT(self);
  SubscriptionObject *s = PyObject_New(SubscriptionObject, &SubscriptionType);
  if (!s) return NULL;
  Py_INCREF(cb);
  s->callback = cb;
  s->sub = NULL;
  int rc = dyn_subscribe(self->rt, subject, on_event, s, &s->sub);
  if (rc) {
    Py_DECREF(s);
    return raise_status(rc, "invalid subject");
  }
  if (PyList_Append(self->subs, (PyObject *)s)) {
    Py_DECREF(s);
    return NULL;
  }
  return (PyObject *)s;
}

static PyObject *Runtime_publish(RuntimeObject *self, PyObject *args) {
  const char *subject;
  Py_buffer data;
  if (!PyArg_ParseTuple(args, "sy*", &subject, &data)) return NULL;
  if (!self->rt) {
    PyBuffer_Release(&data);
    return raise_status(DYN_ECLOSED, "runtime is closed");
  }
  int rc = dyn_publish(self->rt, subject, data.buf, (size_t)data.len);
  PyBuffer_Release(&data);
  if (rc) return raise_status(rc, NULL);
  Py_RETURN_NONE;
}

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
  if (self->rt) {
    free_clients(self);
    dyn_runtime_destroy(self->rt);
    self->rt = NULL;
  }
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


/* ---- HTTP (for @api) ---------------------------------------------------- */

typedef struct {
  PyObject_HEAD
  dyn_http_server_t *srv;
  PyObject *handlers; /* list: keeps route handlers alive */
} HttpServerObject;

typedef struct {
  PyObject_HEAD
  dyn_http_req_t *req; /* NULL once answered */
  PyObject *on_close;
  int closed;
} HttpRequestObject;

static PyTypeObject HttpServerType, HttpRequestType;

static void http_answered(HttpRequestObject *r) {
  r->req = NULL;
  Py_DECREF(r); /* the C side's reference */
}

static void on_http_close(dyn_http_req_t *req, void *ud) {
  HttpRequestObject *r = ud;
  r->closed = 1;
  if (r->on_close && r->on_close != Py_None) {
    PyObject *res = PyObject_CallNoArgs(r->on_close);
    if (!res) report_callback_error("dynamo http on_close");
    Py_XDECREF(res);
  }
}

static void on_http_request(dyn_http_req_t *req, void *ud) {
  HttpRequestObject *r = PyObject_New(HttpRequestObject, &HttpRequestType);
  if (!r) {
    PyErr_Clear();
    dyn_http_error(req, 500, "out of memory");
    return;
  }
  r->req = req;
  r->on_close = NULL;
  r->closed = 0;
  Py_INCREF(r); /* the C side's, until the request is answered */
  dyn_http_on_close(req, on_http_close, r);
  PyObject *res = PyObject_CallOneArg((PyObject *)ud, (PyObject *)r);
  if (!res) {
    report_callback_error("dynamo http handler");
    if (r->req) {
      dyn_http_error(r->req, 500, "handler raised an exception");
      http_answered(r);
    }
  }
  Py_XDECREF(res);
  Py_DECREF(r);
}

static void HttpRequest_dealloc(HttpRequestObject *r) {
  Py_XDECREF(r->on_close);
  PyObject_Free(r);
}

#define CHECK_REQ(r) \
  do { if (!(r)->req) return raise_status(DYN_ECLOSED, "response already finished"); } while (0)

static PyObject *HttpRequest_body(HttpRequestObject *r, PyObject *unused) {
  CHECK_REQ(r);
  size_t len;
  const char *b = dyn_http_body(r->req, &len);
  return PyBytes_FromStringAndSize(b, (Py_ssize_t)len);
}

static PyObject *HttpRequest_header(HttpRequestObject *r, PyObject *args) {
  const char *name;
  if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
  CHECK_REQ(r);
  const char *v = dyn_http_header(r->req, name);
  if (!v) Py_RETURN_NONE;
  return PyUnicode_FromString(v);
}

static PyObject *HttpRequest_info(HttpRequestObject *r, PyObject *unused) {
  CHECK_REQ(r);
  return Py_BuildValue("(sss)", dyn_http_method(r->req), dyn_http_path(r->req),
                       dyn_http_query(r->req));
}

static PyObject *HttpRequest_respond(HttpRequestObject *r, PyObject *args) {
  int status;
  const char *ctype;
  Py_buffer body;
  if (!PyArg_ParseTuple(args, "isy*", &status, &ctype, &body)) return NULL;
  if (!r->req) {
    PyBuffer_Release(&body);
    return raise_status(DYN_ECLOSED, "response already finished");
  }
  int rc = dyn_http_respond(r->req, status, ctype, body.buf, (size_t)body.len);
  PyBuffer_Release(&body);
  http_answered(r);
  return PyBool_FromLong(rc == DYN_OK);
}

static PyObject *HttpRequest_error(HttpRequestObject *r, PyObject *args) {
  int status;
  const char *msg;
  if (!PyArg_ParseTuple(args, "is", &status, &msg)) return NULL;
  CHECK_REQ(r);
  int rc = dyn_http_error(r->req, status, msg);
  http_answered(r);
  return PyBool_FromLong(rc == DYN_OK);
}

static PyObject *HttpRequest_start(HttpRequestObject *r, PyObject *args) {
  int status;
  const char *ctype;
  if (!PyArg_ParseTuple(args, "is", &status, &ctype)) return NULL;
  CHECK_REQ(r);
  return PyBool_FromLong(dyn_http_start(r->req, status, ctype) == DYN_OK);
}

static PyObject *http_write(HttpRequestObject *r, PyObject *arg, int sse) {
  CHECK_REQ(r);
  Py_buffer b;
  if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE)) return NULL;
  int rc = sse ? dyn_http_sse(r->req, b.buf, (size_t)b.len)
               : dyn_http_write(r->req, b.buf, (size_t)b.len);
  PyBuffer_Release(&b);
  return PyBool_FromLong(rc == DYN_OK);
}
static PyObject *HttpRequest_write(HttpRequestObject *r, PyObject *arg) { return http_write(r, arg, 0); }
static PyObject *HttpRequest_sse(HttpRequestObject *r, PyObject *arg) { return http_write(r, arg, 1); }

static PyObject *HttpRequest_finish(HttpRequestObject *r, PyObject *unused) {
  if (!r->req) Py_RETURN_NONE;
  dyn_http_finish(r->req);
  http_answered(r);
  Py_RETURN_NONE;
}

static PyObject *HttpRequest_get_on_close(HttpRequestObject *r, void *c) {
  PyObject *v = r->on_close ? r->on_close : Py_None;
  Py_INCREF(v);
  return v;
}
static int HttpRequest_set_on_close(HttpRequestObject *r, PyObject *v, void *c) {
  Py_XINCREF(v);
  Py_XSETREF(r->on_close, v);
  return 0;
}
static PyObject *HttpRequest_get_closed(HttpRequestObject *r, void *c) { return PyBool_FromLong(r->closed); }

static PyMethodDef HttpRequest_methods[] = {
    {"body", (PyCFunction)HttpRequest_body, METH_NOARGS, "the request body (bytes)"},
    {"header", (PyCFunction)HttpRequest_header, METH_VARARGS, "header(name) -> str | None"},
    {"info", (PyCFunction)HttpRequest_info, METH_NOARGS, "(method, path, query)"},
    {"respond", (PyCFunction)HttpRequest_respond, METH_VARARGS, "respond(status, content_type, body)"},
    {"error", (PyCFunction)HttpRequest_error, METH_VARARGS, "error(status, message): JSON error"},
    {"start", (PyCFunction)HttpRequest_start, METH_VARARGS, "start(status, content_type)"},
    {"write", (PyCFunction)HttpRequest_write, METH_O, "write(bytes) -> False once the client left"},
    {"sse", (PyCFunction)HttpRequest_sse, METH_O, "sse(bytes): one Server-Sent Event"},
    {"finish", (PyCFunction)HttpRequest_finish, METH_NOARGS, "end a started response"},
    {NULL}};
static PyGetSetDef HttpRequest_getset[] = {
    {"on_close", (getter)HttpRequest_get_on_close, (setter)HttpRequest_set_on_close, NULL, NULL},
    {"closed", (getter)HttpRequest_get_closed, NULL, "the client went away", NULL},
    {NULL}};

static PyTypeObject HttpRequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.HttpRequest",
    .tp_basicsize = sizeof(HttpRequestObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)HttpRequest_dealloc,
    .tp_methods = HttpRequest_methods,
    .tp_getset = HttpRequest_getset};

static PyObject *Runtime_http_server(RuntimeObject *self, PyObject *args) {
  const char *host;
  int port;
  if (!PyArg_ParseTuple(args, "si", &host, &port)) return NULL;
  CHECK_RT(self);
  HttpServerObject *hs = PyObject_New(HttpServerObject, &HttpServerType);
  if (!hs) return NULL;
  hs->handlers = PyList_New(0);
  hs->srv = NULL;
  int rc = dyn_http_server_start(dyn_runtime_loop(self->rt), host, port, &hs->srv);
  if (rc) {
    Py_DECREF(hs);
    PyErr_Format(PyExc_OSError, "cannot serve HTTP on %s:%d: %s", host, port, dyn_strerror(rc));
    return NULL;
  }
  return (PyObject *)hs;
}

static void HttpServer_dealloc(HttpServerObject *hs) {
  if (hs->srv) dyn_http_server_stop(hs->srv);
  Py_XDECREF(hs->handlers);
  PyObject_Free(hs);
}

static PyObject *HttpServer_route(HttpServerObject *hs, PyObject *args) {
  const char *method, *path;
  PyObject *handler;
  if (!PyArg_ParseTuple(args, "zsO", &method, &path, &handler)) return NULL;
  if (!hs->srv) return raise_status(DYN_ECLOSED, "server stopped");
  if (PyList_Append(hs->handlers, handler)) return NULL;
  int rc = dyn_http_route(hs->srv, method, path, on_http_request, handler);
  if (rc) return raise_status(rc, "route already registered or invalid");
  Py_RETURN_NONE;
}

static PyObject *HttpServer_stop(HttpServerObject *hs, PyObject *unused) {
  if (hs->srv) {
    dyn_http_server_stop(hs->srv);
    hs->srv = NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *HttpServer_get_port(HttpServerObject *hs, void *c) {
  return PyLong_FromLong(hs->srv ? dyn_http_server_port(hs->srv) : 0);
}

static PyMethodDef HttpServer_methods[] = {
    {"route", (PyCFunction)HttpServer_route, METH_VARARGS, "route(method|None, path, handler(HttpRequest))"},
    {"stop", (PyCFunction)HttpServer_stop, METH_NOARGS, "stop listening; close connections"},
    {NULL}};
static PyGetSetDef HttpServer_getset[] = {{"port", (getter)HttpServer_get_port, NULL, NULL, NULL}, {NULL}};

static PyTypeObject HttpServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.HttpServer",
    .tp_basicsize = sizeof(HttpServerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)HttpServer_dealloc,
    .tp_methods = HttpServer_methods,
    .tp_getset = HttpServer_getset};

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

static PyTypeObject RuntimeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Runtime",
    .tp_basicsize = sizeof(RuntimeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Runtime_init,
    .tp_dealloc = (destructor)Runtime_dealloc,
    .tp_methods = Runtime_methods,
    .tp_getset = Runtime_getset,
    .tp_doc = "One dynamo runtime: a loop, a listener, a control-plane session."};

/* ---- Request ----------------------------------------------------------- */

/* Drops the C side's reference once the request is finished. */
static void request_finished(RequestObject *r) {
  r->req = NULL;
  Py_DECREF(r);
}

static void Request_dealloc(RequestObject *r) {
  Py_XDECREF(r->body);
  Py_XDECREF(r->on_cancel);
  PyObject_Free(r);
}

static PyObject *Request_send(RequestObject *r, PyObject *arg) {
  if (!r->req) return raise_status(DYN_ECLOSED, "request already finished");
  Py_buffer b;
  if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE)) return NULL;
  int rc = dyn_request_send(r->req, b.buf, (size_t)b.len);
  PyBuffer_Release(&b);
  if (rc == DYN_ECANCELED) Py_RETURN_FALSE;
  if (rc) return raise_status(rc, NULL);
  Py_RETURN_TRUE;
}

static PyObject *Request_end(RequestObject *r, PyObject *unused) {
  if (!r->req) Py_RETURN_NONE;
  dyn_request_end(r->req);
  request_finished(r);
  Py_RETURN_NONE;
}

static PyObject *Request_fail(RequestObject *r, PyObject *args) {
  const char *msg;
  if (!PyArg_ParseTuple(args, "s", &msg)) return NULL;
  if (!r->req) Py_RETURN_NONE;
  dyn_request_fail(r->req, msg);
  request_finished(r);
  Py_RETURN_NONE;
}

static PyObject *Request_get_cancelled(RequestObject *r, void *c) {
  return PyBool_FromLong(r->cancelled);
}
static PyObject *Request_get_id(RequestObject *r, void *c) {
  return r->req ? PyLong_FromUnsignedLongLong(dyn_request_id(r->req)) : PyLong_FromLong(0);
}
static PyObject *Request_get_on_cancel(RequestObject *r, void *c) {
  PyObject *v = r->on_cancel ? r->on_cancel : Py_None;
  Py_INCREF(v);
  return v;
}
static int Request_set_on_cancel(RequestObject *r, PyObject *v, void *c) {
  Py_XINCREF(v);
  Py_XSETREF(r->on_cancel, v);
  return 0;
}

static PyMethodDef Request_methods[] = {
    {"send", (PyCFunction)Request_send, METH_O, "send(bytes) -> False if cancelled"},
    {"end", (PyCFunction)Request_end, METH_NOARGS, "end the response stream"},
    {"fail", (PyCFunction)Request_fail, METH_VARARGS, "fail(message)"},
    {NULL}};
static PyMemberDef Request_members[] = {
    {"body", T_OBJECT, offsetof(RequestObject, body), READONLY, "request bytes"}, {NULL}};
static PyGetSetDef Request_getset[] = {
    {"cancelled", (getter)Request_get_cancelled, NULL, NULL, NULL},
    {"id", (getter)Request_get_id, NULL, NULL, NULL},
    {"on_cancel", (getter)Request_get_on_cancel, (setter)Request_set_on_cancel, NULL, NULL},
    {NULL}};

static PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Request",
    .tp_basicsize = sizeof(RequestObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Request_dealloc,
    .tp_methods = Request_methods,
    .tp_members = Request_members,
    .tp_getset = Request_getset};

/* ---- Stream ------------------------------------------------------------ */

typedef struct {
  PyObject_HEAD
  dyn_stream_t *s;
  PyObject *items;  /* list of bytes not yet taken */
  Py_ssize_t head;  /* next item in items */
  PyObject *waiter; /* callable: new data or done */
  int done;
  int status;
  PyObject *error;
  uint64_t instance;
} StreamObject;

static void wake(StreamObject *so) {
  if (!so->waiter || so->waiter == Py_None) return;
  PyObject *w = so->waiter;
  so->waiter = NULL;
  PyObject *res = PyObject_CallNoArgs(w);
  if (!res) report_callback_error("dynamo stream waiter");
  Py_XDECREF(res);
  Py_DECREF(w);
}

static void on_stream_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  StreamObject *so = ud;
  so->instance = dyn_stream_instance_id(s);
  PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
  if (!b || PyList_Append(so->items, b)) {
    PyErr_Clear();
    Py_XDECREF(b);
    dyn_stream_cancel(s);
    return;
  }
  Py_DECREF(b);
  wake(so);
}

static void on_stream_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  StreamObject *so = ud;
  so->instance = dyn_stream_instance_id(s); /* where it ran, after any reroute */
  so->s = NULL;
  so->done = 1;
  so->status = status;
  if (status != DYN_OK) so->error = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
  if (!so->error && status != DYN_OK) PyErr_Clear();
  wake(so);
  Py_DECREF(so); /* the C side's reference */
}

static void Stream_dealloc(StreamObject *so) {
  if (so->s) dyn_stream_cancel(so->s); /* cannot happen: C holds a ref */
  Py_XDECREF(so->items);
  Py_XDECREF(so->waiter);
  Py_XDECREF(so->error);
  PyObject_Free(so);
}

/* pop() -> bytes, or None when nothing is buffered. */
static PyObject *Stream_pop(StreamObject *so, PyObject *unused) {
  Py_ssize_t n = PyList_GET_SIZE(so->items);
  if (so->head >= n) Py_RETURN_NONE;
  PyObject *item = PyList_GET_ITEM(so->items, so->head);
  Py_INCREF(item);
  if (++so->head == n) {
    if (PyList_SetSlice(so->items, 0, n, NULL)) return NULL;
    so->head = 0;
  }
  return item;
}

static PyObject *Stream_cancel(StreamObject *so, PyObject *unused) {
  if (so->s) dyn_stream_cancel(so->s);
  Py_RETURN_NONE;
}

static PyObject *Stream_get_waiter(StreamObject *so, void *c) {
  PyObject *v = so->waiter ? so->waiter : Py_None;
  Py_INCREF(v);
  return v;
}
static int Stream_set_waiter(StreamObject *so, PyObject *v, void *c) {
  Py_XINCREF(v);
  Py_XSETREF(so->waiter, v);
  return 0;
}
static PyObject *Stream_get_done(StreamObject *so, void *c) {
  return PyBool_FromLong(so->done && so->head >= PyList_GET_SIZE(so->items));
}
static PyObject *Stream_get_status(StreamObject *so, void *c) { return PyLong_FromLong(so->status); }
static PyObject *Stream_get_error(StreamObject *so, void *c) {
  PyObject *v = so->error ? so->error : Py_None;
  Py_INCREF(v);
  return v;
}
static PyObject *Stream_get_instance(StreamObject *so, void *c) {
  return PyLong_FromUnsignedLongLong(so->s ? dyn_stream_instance_id(so->s) : so->instance);
}

static PyMethodDef Stream_methods[] = {
    {"pop", (PyCFunction)Stream_pop, METH_NOARGS, "next buffered message or None"},
    {"cancel", (PyCFunction)Stream_cancel, METH_NOARGS, "cancel the stream"},
    {NULL}};
static PyGetSetDef Stream_getset[] = {
    {"waiter", (getter)Stream_get_waiter, (setter)Stream_set_waiter, NULL, NULL},
    {"done", (getter)Stream_get_done, NULL, "ended and drained", NULL},
    {"status", (getter)Stream_get_status, NULL, NULL, NULL},
    {"error", (getter)Stream_get_error, NULL, NULL, NULL},
    {"instance_id", (getter)Stream_get_instance, NULL, NULL, NULL},
    {NULL}};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Stream",
    .tp_basicsize = sizeof(StreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_methods = Stream_methods,
    .tp_getset = Stream_getset};

/* ---- Client ------------------------------------------------------------ */

static void Client_dealloc(ClientObject *co) {
  if (co->c) dyn_client_free(co->c);
  Py_XDECREF(co->on_change);
  Py_XDECREF(co->runtime);
  PyObject_Free(co);
}

static PyObject *Client_generate(ClientObject *co, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"body", "route", "instance_id", "deadline_ms", NULL};
  Py_buffer body;
  int route = 0;
  unsigned long long inst = 0;
  unsigned int deadline = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|iKI", kwlist, &body, &route, &inst, &deadline))
    return NULL;
  if (!co->c) {
    PyBuffer_Release(&body);
    return raise_status(DYN_ECLOSED, "client is closed");
  }
  StreamObject *so = PyObject_New(StreamObject, &StreamType);
  if (!so) {
    PyBuffer_Release(&body);
    return NULL;
  }
  so->s = NULL;
  so->items = PyList_New(0);
  so->head = 0;
  so->waiter = NULL;
  so->done = 0;
  so->status = 0;
  so->error = NULL;
  so->instance = 0;
  dyn_call_options_t opt = {(dyn_route_t)route, inst, deadline, 0};
  static const dyn_stream_callbacks_t cb = {on_stream_data, on_stream_done};
  Py_INCREF(so); /* the C side's reference */
  int rc = so->items ? dyn_client_generate(co->c, &opt, body.buf, (size_t)body.len, &cb, so, &so->s)
                     : DYN_ENOMEM;
  PyBuffer_Release(&body);
  if (rc) {
    so->s = NULL;
    Py_DECREF(so);
    Py_DECREF(so);
    return raise_status(rc, NULL);
  }
  if (so->s) so->instance = dyn_stream_instance_id(so->s);
  return (PyObject *)so;
}

static PyObject *Client_instances(ClientObject *co, PyObject *unused) {
  if (!co->c) return PyList_New(0);
  uint64_t ids[256];
  size_t n = dyn_client_instances(co->c, ids, 256);
  if (n > 256) n = 256;
  PyObject *l = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; l && i < n; i++)
    PyList_SET_ITEM(l, (Py_ssize_t)i, PyLong_FromUnsignedLongLong(ids[i]));
  return l;
}

static PyObject *Client_set_wait(ClientObject *co, PyObject *arg) {
  long ms = PyLong_AsLong(arg);
  if (ms == -1 && PyErr_Occurred()) return NULL;
  if (co->c) dyn_client_set_wait(co->c, (int)ms);
  Py_RETURN_NONE;
}

static PyObject *Client_get_on_change(ClientObject *co, void *c) {
  PyObject *v = co->on_change ? co->on_change : Py_None;
  Py_INCREF(v);
  return v;
}
static int Client_set_on_change(ClientObject *co, PyObject *v, void *c) {
  Py_XINCREF(v);
  Py_XSETREF(co->on_change, v);
  return 0;
}

static PyMethodDef Client_methods[] = {
    {"generate", (PyCFunction)(void (*)(void))Client_generate, METH_VARARGS | METH_KEYWORDS,
     "generate(body, route=0, instance_id=0, deadline_ms=0) -> Stream"},
    {"instances", (PyCFunction)Client_instances, METH_NOARGS, "live instance ids"},
    {"set_wait", (PyCFunction)Client_set_wait, METH_O, "ms a request waits for a first instance"},
    {NULL}};
static PyGetSetDef Client_getset[] = {
    {"on_change", (getter)Client_get_on_change, (setter)Client_set_on_change, NULL, NULL},
    {NULL}};

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Client",
    .tp_basicsize = sizeof(ClientObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Client_dealloc,
    .tp_methods = Client_methods,
    .tp_getset = Client_getset};

/* ---- Subscription ------------------------------------------------------ */

static void Subscription_dealloc(SubscriptionObject *s) {
  Py_XDECREF(s->callback);
  PyObject_Free(s);
}

static PyTypeObject SubscriptionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Subscription",
    .tp_basicsize = sizeof(SubscriptionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Subscription_dealloc};

/* ---- module ------------------------------------------------------------ */

static PyObject *mod_control_default_path(PyObject *m, PyObject *unused) {
  return PyUnicode_FromString(dyn_control_default_path());
}

/* Workers ask for a signal when their supervisor dies: the kernel then
 * stops them even if the supervisor was SIGKILLed. */
static PyObject *mod_set_parent_death_signal(PyObject *m, PyObject *arg) {
  long sig = PyLong_AsLong(arg);
  if (sig == -1 && PyErr_Occurred()) return NULL;
  if (prctl(PR_SET_PDEATHSIG, sig) != 0) return PyErr_SetFromErrno(PyExc_OSError);
  Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"control_default_path", mod_control_default_path, METH_NOARGS, NULL},
    {"set_parent_death_signal", mod_set_parent_death_signal, METH_O, NULL},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "dynamo._core",
                                       "C core of dynamo", -1, module_methods};

PyMODINIT_FUNC PyInit__core(void) {
  PyTypeObject *types[] = {&RuntimeType, &RequestType, &ClientType, &StreamType,
                           &SubscriptionType, &HttpServerType, &HttpRequestType};
  for (size_t i = 0; i < sizeof types / sizeof *types; i++)
    if (PyType_Ready(types[i])) return NULL;
  PyObject *m = PyModule_Create(&moduledef);
  if (!m) return NULL;
  DynamoError = PyErr_NewException("dynamo._core.DynamoError", PyExc_RuntimeError, NULL);
  Py_INCREF(DynamoError);
  PyModule_AddObject(m, "DynamoError", DynamoError);
  Py_INCREF(&RuntimeType);
  PyModule_AddObject(m, "Runtime", (PyObject *)&RuntimeType);
  PyModule_AddIntConstant(m, "ROUTE_RANDOM", DYN_ROUTE_RANDOM);
  PyModule_AddIntConstant(m, "ROUTE_ROUND_ROBIN", DYN_ROUTE_ROUND_ROBIN);
  PyModule_AddIntConstant(m, "ROUTE_DIRECT", DYN_ROUTE_DIRECT);
  PyModule_AddIntConstant(m, "OK", DYN_OK);
  PyModule_AddIntConstant(m, "ENOINSTANCE", DYN_ENOINSTANCE);
  PyModule_AddIntConstant(m, "ECANCELED", DYN_ECANCELED);
  PyModule_AddIntConstant(m, "EREMOTE", DYN_EREMOTE);
  PyModule_AddIntConstant(m, "EDISCONNECTED", DYN_EDISCONNECTED);
  return m;
}
