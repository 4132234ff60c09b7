/* stream.c - dynamo._core.Stream: the responses to one request a Client
 * sent.
 *
 * Messages are buffered as they arrive and taken with pop(); the waiter, a
 * callable dynamo/runtime.py sets while it awaits, is called once on new
 * data or on the end, then cleared. The C side holds a reference to the
 * Stream from the request until its on_done, which always comes.
 */
#include "core.h"

typedef struct {
  PyObject_HEAD
  dyn_stream_t *s;  /* NULL once done */
  PyObject *items;  /* list of bytes not yet taken */
  Py_ssize_t head;  /* next item in items */
  PyObject *waiter; /* callable: new data or done */
  int done;
  int status;
  PyObject *error;  /* str, once done with a failure */
  uint64_t instance;
} StreamObject;

static void wake(StreamObject *so) {
  if (!so->waiter || so->waiter == Py_None) return;
  PyObject *w = so->waiter;
  so->waiter = NULL;
  PyObject *res = PyObject_CallNoArgs(w);
  if (!res) core_report_callback_error("dynamo stream waiter");
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
  if (status != DYN_OK) {
    so->error = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
    if (!so->error) PyErr_Clear();
  }
  wake(so);
  Py_DECREF(so); /* the C side's reference */
}

PyObject *core_stream_open(dyn_client_t *c, const dyn_call_options_t *opt, const void *body,
                           size_t len) {
  StreamObject *so = PyObject_New(StreamObject, &StreamType);
  if (!so) return NULL;
  so->s = NULL;
  so->head = 0;
  so->waiter = NULL;
  so->done = 0;
  so->status = 0;
  so->error = NULL;
  so->instance = 0;
  so->items = PyList_New(0);
  if (!so->items) {
    Py_DECREF(so);
    return NULL;
  }
  static const dyn_stream_callbacks_t cb = {on_stream_data, on_stream_done};
  int rc = dyn_client_generate(c, opt, body, len, &cb, so, &so->s);
  if (rc) {
    so->s = NULL;
    Py_DECREF(so);
    return core_raise_status(rc, NULL);
  }
  /* on_done never runs inside dyn_client_generate: the C side's reference,
   * dropped by on_stream_done. */
  Py_INCREF(so);
  so->instance = dyn_stream_instance_id(so->s);
  return (PyObject *)so;
}

/* The C side holds a reference until on_done, so s is NULL by now. */
static void Stream_dealloc(StreamObject *so) {
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
    if (PyList_SetSlice(so->items, 0, n, NULL)) {
      Py_DECREF(item);
      return NULL;
    }
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

PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Stream",
    .tp_basicsize = sizeof(StreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_methods = Stream_methods,
    .tp_getset = Stream_getset};
