/* request.c - dynamo._core.Request: one request a served endpoint received.
 *
 * core_on_request wraps each incoming dyn_request_t in a Request and hands
 * it to the endpoint's Python handler, which answers with send(), end() or
 * fail() and learns of a cancel through on_cancel. The C side holds a
 * reference to the Request until it is finished, since the cancel callback
 * can arrive any time before then.
 */
#include "core.h"

#include <structmember.h>

typedef struct {
  PyObject_HEAD
  dyn_request_t *req; /* NULL once finished */
  PyObject *body;
  PyObject *on_cancel;
  int cancelled;
} RequestObject;

/* Drops the C side's reference once the request is finished. */
static void request_finished(RequestObject *r) {
  r->req = NULL;
  Py_DECREF(r);
}

static void on_request_cancel(dyn_request_t *req, void *ud) {
  RequestObject *r = ud;
  r->cancelled = 1;
  if (r->on_cancel && r->on_cancel != Py_None) {
    PyObject *res = PyObject_CallNoArgs(r->on_cancel);
    if (!res) core_report_callback_error("dynamo request cancel callback");
    Py_XDECREF(res);
  }
}

void core_on_request(dyn_request_t *req, const void *body, size_t len, void *ud) {
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
  r->body = PyBytes_FromStringAndSize(body, (Py_ssize_t)len);
  if (!r->body) {
    PyErr_Clear();
    r->req = NULL;
    Py_DECREF(r);
    dyn_request_fail(req, "out of memory");
    return;
  }
  Py_INCREF(r); /* the C side's reference, dropped when the request is finished */
  dyn_request_on_cancel(req, on_request_cancel, r);
  PyObject *res = PyObject_CallOneArg(handler, (PyObject *)r);
  if (!res) {
    core_report_callback_error("dynamo endpoint handler");
    if (r->req) {
      dyn_request_fail(r->req, "handler raised an exception");
      request_finished(r);
    }
  }
  Py_XDECREF(res);
  Py_DECREF(r);
}

static void Request_dealloc(RequestObject *r) {
  Py_XDECREF(r->body);
  Py_XDECREF(r->on_cancel);
  PyObject_Free(r);
}

static PyObject *Request_send(RequestObject *r, PyObject *arg) {
  if (!r->req) return core_raise_status(DYN_ECLOSED, "request already finished");
  Py_buffer b;
  if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE)) return NULL;
  int rc = dyn_request_send(r->req, b.buf, (size_t)b.len);
  PyBuffer_Release(&b);
  if (rc == DYN_ECANCELED) Py_RETURN_FALSE;
  if (rc) return core_raise_status(rc, NULL);
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

PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Request",
    .tp_basicsize = sizeof(RequestObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Request_dealloc,
    .tp_methods = Request_methods,
    .tp_members = Request_members,
    .tp_getset = Request_getset};
