/* client.c - dynamo._core.Client: a dyn_client_t calling one endpoint.
 *
 * It follows the endpoint's live instances (instances(), and on_change
 * after each change) and opens a Stream per request with generate(). The
 * Runtime that made it keeps it in a list and frees the C client when it
 * closes, so every method copes with a closed client.
 */
#include "core.h"

typedef struct {
  PyObject_HEAD
  dyn_client_t *c;   /* NULL once closed */
  PyObject *runtime; /* the Runtime, kept alive while the client is */
  PyObject *on_change;
} ClientObject;

static void on_instances(dyn_client_t *c, void *ud) {
  ClientObject *co = ud;
  if (!co->on_change || co->on_change == Py_None) return;
  PyObject *res = PyObject_CallNoArgs(co->on_change);
  if (!res) core_report_callback_error("dynamo client on_change");
  Py_XDECREF(res);
}

PyObject *core_client_new(PyObject *runtime, dyn_endpoint_t *ep) {
  ClientObject *co = PyObject_New(ClientObject, &ClientType);
  if (!co) return NULL;
  Py_INCREF(runtime);
  co->runtime = runtime;
  co->on_change = NULL;
  int rc = dyn_endpoint_client(ep, &co->c);
  if (rc) {
    co->c = NULL;
    Py_DECREF(co);
    return core_raise_status(rc, NULL);
  }
  dyn_client_on_change(co->c, on_instances, co);
  return (PyObject *)co;
}

void core_client_close(PyObject *client) {
  ClientObject *co = (ClientObject *)client;
  if (co->c) {
    dyn_client_free(co->c);
    co->c = NULL;
  }
}

static void Client_dealloc(ClientObject *co) {
  core_client_close((PyObject *)co);
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
    return core_raise_status(DYN_ECLOSED, "client is closed");
  }
  dyn_call_options_t opt = {(dyn_route_t)route, inst, deadline, 0};
  PyObject *so = core_stream_open(co->c, &opt, body.buf, (size_t)body.len);
  PyBuffer_Release(&body);
  return so;
}

/* The ids of the live instances, however many there are. */
static PyObject *Client_instances(ClientObject *co, PyObject *unused) {
  if (!co->c) return PyList_New(0);
  uint64_t some[256], *ids = some;
  size_t n = dyn_client_instances(co->c, ids, 256);
  if (n > 256) {
    size_t cap = n;
    ids = PyMem_New(uint64_t, cap);
    if (!ids) return PyErr_NoMemory();
    n = dyn_client_instances(co->c, ids, cap);
    if (n > cap) n = cap;
  }
  PyObject *l = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; l && i < n; i++) {
    PyObject *id = PyLong_FromUnsignedLongLong(ids[i]);
    if (!id) Py_CLEAR(l);
    else PyList_SET_ITEM(l, (Py_ssize_t)i, id);
  }
  if (ids != some) PyMem_Free(ids);
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

PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Client",
    .tp_basicsize = sizeof(ClientObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Client_dealloc,
    .tp_methods = Client_methods,
    .tp_getset = Client_getset};
