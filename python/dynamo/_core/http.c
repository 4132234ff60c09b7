/* http.c - dynamo._core.HttpServer and HttpRequest: src/http's server on
 * the runtime's loop, for @api endpoints (dynamo/sdk/http.py) and a
 * worker's /health (dynamo/sdk/health.py).
 *
 * Each request reaches its route's Python handler as an HttpRequest, which
 * answers it once: respond() or error(), or start(), write()/sse() and
 * finish(). The C side holds a reference to the HttpRequest until it is
 * answered, since on_close can arrive any time before then.
 */
#include "core.h"

#include "dynamo/http.h"

typedef struct {
  PyObject_HEAD
  dyn_http_req_t *req; /* NULL once answered */
  PyObject *on_close;
  int closed;
} HttpRequestObject;

static void http_answered(HttpRequestObject *r) {
  r->req = NULL;
  Py_DECREF(r); /* the C side's reference */
}

static void on_http_close(dyn_http_req_t *req, void *ud) {
  HttpRequestObject *r = ud;
  r->closed = 1;
  if (r->on_close && r->on_close != Py_None) {
    PyObject *res = PyObject_CallNoArgs(r->on_close);
    if (!res) core_report_callback_error("dynamo http on_close");
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
    core_report_callback_error("dynamo http handler");
    if (r->req) {
      /* A response the handler already started can only be ended. */
      if (dyn_http_error(r->req, 500, "handler raised an exception") == DYN_EINVAL)
        dyn_http_finish(r->req);
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
  do { if (!(r)->req) return core_raise_status(DYN_ECLOSED, "response already finished"); } while (0)

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
    return core_raise_status(DYN_ECLOSED, "response already finished");
  }
  int rc = dyn_http_respond(r->req, status, ctype, body.buf, (size_t)body.len);
  PyBuffer_Release(&body);
  if (rc != DYN_EINVAL) http_answered(r); /* EINVAL leaves req open */
  return PyBool_FromLong(rc == DYN_OK);
}

static PyObject *HttpRequest_error(HttpRequestObject *r, PyObject *args) {
  int status;
  const char *msg;
  if (!PyArg_ParseTuple(args, "is", &status, &msg)) return NULL;
  CHECK_REQ(r);
  int rc = dyn_http_error(r->req, status, msg);
  if (rc != DYN_EINVAL) http_answered(r); /* EINVAL leaves req open */
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

PyTypeObject HttpRequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.HttpRequest",
    .tp_basicsize = sizeof(HttpRequestObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)HttpRequest_dealloc,
    .tp_methods = HttpRequest_methods,
    .tp_getset = HttpRequest_getset};

typedef struct {
  PyObject_HEAD
  dyn_http_server_t *srv;      /* NULL once stopped */
  PyObject *handlers; /* list: keeps route handlers alive */
} HttpServerObject;

PyObject *core_http_server_start(uv_loop_t *loop, const char *host, int port) {
  HttpServerObject *hs = PyObject_New(HttpServerObject, &HttpServerType);
  if (!hs) return NULL;
  hs->srv = NULL;
  hs->handlers = PyList_New(0);
  if (!hs->handlers) {
    Py_DECREF(hs);
    return NULL;
  }
  int rc = dyn_http_server_start(loop, host, port, &hs->srv);
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
  if (!hs->srv) return core_raise_status(DYN_ECLOSED, "server stopped");
  if (PyList_Append(hs->handlers, handler)) return NULL;
  int rc = dyn_http_route(hs->srv, method, path, on_http_request, handler);
  if (rc)
    return core_raise_status(rc, rc == DYN_EEXIST   ? "route already registered"
                                 : rc == DYN_EINVAL ? "invalid route"
                                                    : NULL);
  Py_RETURN_NONE;
}

/* set_limits({"http_max_connections": 4096, ...}): the keys of
 * dyn_http_limit_name(), the others keep their values. */
static PyObject *HttpServer_set_limits(HttpServerObject *hs, PyObject *arg) {
  if (!PyDict_Check(arg)) return PyErr_Format(PyExc_TypeError, "set_limits takes a dict");
  if (!hs->srv) return core_raise_status(DYN_ECLOSED, "server stopped");
  dyn_http_limits_t l;
  dyn_http_server_limits(hs->srv, &l);
  PyObject *k, *v;
  Py_ssize_t pos = 0;
  while (PyDict_Next(arg, &pos, &k, &v)) {
    const char *name = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
    if (!name) return PyErr_Format(PyExc_TypeError, "HTTP limit names are strings");
    if (!PyLong_Check(v) || PyBool_Check(v))
      return PyErr_Format(PyExc_ValueError, "%s must be an integer, not %s", name,
                          Py_TYPE(v)->tp_name);
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    int rc = overflow ? DYN_EINVAL : dyn_http_limits_set(&l, name, n);
    if (rc == DYN_ENOTFOUND) return PyErr_Format(PyExc_ValueError, "%s is not an HTTP limit", name);
    if (rc) return PyErr_Format(PyExc_ValueError, "%s: %S is out of range", name, v);
  }
  if (dyn_http_server_set_limits(hs->srv, &l))
    return PyErr_Format(PyExc_ValueError, "invalid HTTP limits");
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
    {"set_limits", (PyCFunction)HttpServer_set_limits, METH_O, "set_limits({http_max_connections: n, ...})"},
    {"stop", (PyCFunction)HttpServer_stop, METH_NOARGS, "stop listening; close connections"},
    {NULL}};
static PyGetSetDef HttpServer_getset[] = {{"port", (getter)HttpServer_get_port, NULL, NULL, NULL}, {NULL}};

PyTypeObject HttpServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.HttpServer",
    .tp_basicsize = sizeof(HttpServerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)HttpServer_dealloc,
    .tp_methods = HttpServer_methods,
    .tp_getset = HttpServer_getset};
