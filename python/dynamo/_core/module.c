/* module.c - the dynamo._core module: its types, constants, DynamoError,
 * its module-level functions, and the error helpers every type uses.
 */
#include "core.h"

#include "dynamo/http.h"

#include <sys/prctl.h>

static PyObject *DynamoError;

PyObject *core_raise_status(int status, const char *message) {
  PyObject *args = Py_BuildValue("(is)", status, message ? message : dyn_strerror(status));
  if (args) {
    PyErr_SetObject(DynamoError, args);
    Py_DECREF(args);
  }
  return NULL;
}

void core_report_callback_error(const char *where) {
  if (!PyErr_Occurred()) return;
  /* Naming the callback must not replace the exception being reported. */
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyObject *obj = PyUnicode_FromString(where);
  if (!obj) PyErr_Clear();
  PyErr_Restore(type, value, tb);
  PyErr_WriteUnraisable(obj);
  Py_XDECREF(obj);
}

/* component_subject(ns, component, name): the subject a component's events
 * go out on, spelled by the runtime (dyn_event_subject) so that Python and
 * C publishers and subscribers always agree. */
static PyObject *mod_component_subject(PyObject *m, PyObject *args) {
  const char *ns, *component, *name;
  if (!PyArg_ParseTuple(args, "sss", &ns, &component, &name)) return NULL;
  char buf[1024];
  if (dyn_event_subject(ns, component, name, buf, sizeof buf) != DYN_OK) {
    PyErr_SetString(PyExc_ValueError, "subject too long");
    return NULL;
  }
  return PyUnicode_FromString(buf);
}

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

/* strerror(status): the runtime's one-line name of a DYN_E* status, the
 * kind of a failure without its details (an HTTP client is told that an
 * upstream instance disconnected, not its address). */
static PyObject *mod_strerror(PyObject *m, PyObject *arg) {
  long status = PyLong_AsLong(arg);
  if (status == -1 && PyErr_Occurred()) return NULL;
  return PyUnicode_FromString(dyn_strerror((int)status));
}

/* http_error_type(status): the "type" of an HTTP error body, as src/http's
 * own error bodies and the LLM Frontend's spell it. */
static PyObject *mod_http_error_type(PyObject *m, PyObject *arg) {
  long status = PyLong_AsLong(arg);
  if (status == -1 && PyErr_Occurred()) return NULL;
  return PyUnicode_FromString(dyn_http_error_type((int)status));
}

static PyMethodDef module_methods[] = {
    {"strerror", mod_strerror, METH_O, NULL},
    {"http_error_type", mod_http_error_type, METH_O, NULL},
    {"control_default_path", mod_control_default_path, METH_NOARGS, NULL},
    {"component_subject", mod_component_subject, METH_VARARGS, NULL},
    {"set_parent_death_signal", mod_set_parent_death_signal, METH_O, NULL},
    {"metrics_render", core_metrics_render, METH_NOARGS, NULL},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "dynamo._core",
                                       "C core of dynamo", -1, module_methods};

/* Adds a new reference to obj to m as name; PyModule_AddObject steals one
 * only when it succeeds. */
static int add_object(PyObject *m, const char *name, PyObject *obj) {
  Py_INCREF(obj);
  if (!PyModule_AddObject(m, name, obj)) return 0;
  Py_DECREF(obj);
  return -1;
}

PyMODINIT_FUNC PyInit__core(void) {
  PyTypeObject *types[] = {&RuntimeType, &RequestType, &ClientType, &StreamType,
                           &SubscriptionType, &HttpServerType, &HttpRequestType, &MetricType};
  for (size_t i = 0; i < sizeof types / sizeof *types; i++)
    if (PyType_Ready(types[i])) return NULL;
  if (!DynamoError) {
    DynamoError = PyErr_NewException("dynamo._core.DynamoError", PyExc_RuntimeError, NULL);
    if (!DynamoError) return NULL;
  }
  PyObject *m = PyModule_Create(&moduledef);
  if (!m) return NULL;
  if (add_object(m, "DynamoError", DynamoError) ||
      add_object(m, "Runtime", (PyObject *)&RuntimeType) ||
      add_object(m, "Metric", (PyObject *)&MetricType) ||
      PyModule_AddIntConstant(m, "COUNTER", DYN_METRIC_COUNTER) ||
      PyModule_AddIntConstant(m, "GAUGE", DYN_METRIC_GAUGE) ||
      PyModule_AddIntConstant(m, "HISTOGRAM", DYN_METRIC_HISTOGRAM) ||
      PyModule_AddIntConstant(m, "ROUTE_RANDOM", DYN_ROUTE_RANDOM) ||
      PyModule_AddIntConstant(m, "ROUTE_ROUND_ROBIN", DYN_ROUTE_ROUND_ROBIN) ||
      PyModule_AddIntConstant(m, "ROUTE_DIRECT", DYN_ROUTE_DIRECT) ||
      PyModule_AddIntConstant(m, "OK", DYN_OK) ||
      PyModule_AddIntConstant(m, "ENOINSTANCE", DYN_ENOINSTANCE) ||
      PyModule_AddIntConstant(m, "ECANCELED", DYN_ECANCELED) ||
      PyModule_AddIntConstant(m, "EREMOTE", DYN_EREMOTE) ||
      PyModule_AddIntConstant(m, "EDISCONNECTED", DYN_EDISCONNECTED) ||
      PyModule_AddIntConstant(m, "ECONNECT", DYN_ECONNECT) ||
      PyModule_AddIntConstant(m, "ETIMEDOUT", DYN_ETIMEDOUT) ||
      PyModule_AddIntConstant(m, "ECLOSED", DYN_ECLOSED)) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
