/* metrics.c - Metric: a family of the process's Prometheus registry
 * (dynamo/metrics.h, dyn_metrics_default), for the SDK's metrics module and
 * the worker's GET /metrics.
 *
 * Metric(kind, name, help, labels, buckets) registers (or finds) the
 * family; add, set and observe take the label values as a tuple in the
 * family's label order. The registry is the one the C runtime records its
 * request-plane metrics in, so a Python worker's /metrics shows both.
 */
#include "core.h"

typedef struct {
  PyObject_HEAD
  dyn_metric_t *family; /* owned by the registry, which lives with the process */
  Py_ssize_t n_labels;
} MetricObject;

static int Metric_init(MetricObject *self, PyObject *args, PyObject *kw) {
  int kind;
  const char *name, *help;
  PyObject *labels = NULL, *buckets = NULL;
  static char *kwlist[] = {"kind", "name", "help", "labels", "buckets", NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "iss|OO", kwlist, &kind, &name, &help, &labels,
                                   &buckets))
    return -1;
  if (kind < DYN_METRIC_COUNTER || kind > DYN_METRIC_HISTOGRAM) {
    PyErr_SetString(PyExc_ValueError, "kind must be COUNTER, GAUGE or HISTOGRAM");
    return -1;
  }
  const char *names[DYN_METRIC_MAX_LABELS + 1] = {0};
  double bounds[DYN_METRIC_MAX_BUCKETS];
  Py_ssize_t nl = 0, nb = 0;
  PyObject *lseq = labels && labels != Py_None ? PySequence_Fast(labels, "labels must be a sequence") : NULL;
  PyObject *bseq = buckets && buckets != Py_None ? PySequence_Fast(buckets, "buckets must be a sequence") : NULL;
  int rc = -1;
  if ((labels && labels != Py_None && !lseq) || (buckets && buckets != Py_None && !bseq)) goto out;
  nl = lseq ? PySequence_Fast_GET_SIZE(lseq) : 0;
  nb = bseq ? PySequence_Fast_GET_SIZE(bseq) : 0;
  if (nl > DYN_METRIC_MAX_LABELS || nb > DYN_METRIC_MAX_BUCKETS) {
    PyErr_Format(PyExc_ValueError, "at most %d labels and %d buckets", DYN_METRIC_MAX_LABELS,
                 DYN_METRIC_MAX_BUCKETS);
    goto out;
  }
  for (Py_ssize_t i = 0; i < nl; i++)
    if (!(names[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(lseq, i)))) goto out;
  for (Py_ssize_t i = 0; i < nb; i++) {
    bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(bseq, i));
    if (PyErr_Occurred()) goto out;
  }
  dyn_metrics_t *m = dyn_metrics_default();
  int st = m ? dyn_metrics_add(m, (dyn_metric_type_t)kind, name, help, names, bounds,
                               (size_t)nb, &self->family)
             : DYN_ENOMEM;
  if (st == DYN_EINVAL) {
    PyErr_Format(PyExc_ValueError,
                 "metric %s: a bad name or label name (letters, digits, _), or buckets that "
                 "do not increase (a histogram needs at least one)", name);
  } else if (st == DYN_EEXIST) {
    PyErr_Format(PyExc_ValueError, "metric %s is already registered with another type or labels",
                 name);
  } else if (st) {
    core_raise_status(st, NULL);
  } else {
    self->n_labels = nl;
    rc = 0;
  }
out:
  Py_XDECREF(lseq);
  Py_XDECREF(bseq);
  return rc;
}

/* The series for a tuple of label values; NULL with the exception set. */
static dyn_series_t *series_of(MetricObject *self, PyObject *values) {
  if (!self->family) {
    PyErr_SetString(PyExc_RuntimeError, "Metric is not initialized");
    return NULL;
  }
  if (!PyTuple_Check(values) || PyTuple_GET_SIZE(values) != self->n_labels) {
    PyErr_Format(PyExc_ValueError, "expected a tuple of %zd label values", self->n_labels);
    return NULL;
  }
  const char *v[DYN_METRIC_MAX_LABELS];
  for (Py_ssize_t i = 0; i < self->n_labels; i++)
    if (!(v[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(values, i)))) return NULL;
  dyn_series_t *s = dyn_metric_series(self->family, v);
  if (!s) PyErr_NoMemory();
  return s;
}

typedef void (*update_fn)(dyn_series_t *s, double v);

static PyObject *update(MetricObject *self, PyObject *args, update_fn fn) {
  PyObject *values;
  double v;
  if (!PyArg_ParseTuple(args, "Od", &values, &v)) return NULL;
  dyn_series_t *s = series_of(self, values);
  if (!s) return NULL;
  fn(s, v);
  Py_RETURN_NONE;
}

static PyObject *Metric_add(MetricObject *self, PyObject *args) {
  return update(self, args, dyn_series_add);
}
static PyObject *Metric_set(MetricObject *self, PyObject *args) {
  return update(self, args, dyn_series_set);
}
static PyObject *Metric_observe(MetricObject *self, PyObject *args) {
  return update(self, args, dyn_series_observe);
}

static PyMethodDef Metric_methods[] = {
    {"add", (PyCFunction)Metric_add, METH_VARARGS, "add(values, v): counter or gauge += v"},
    {"set", (PyCFunction)Metric_set, METH_VARARGS, "set(values, v): gauge = v"},
    {"observe", (PyCFunction)Metric_observe, METH_VARARGS, "observe(values, v): histogram"},
    {NULL}};

PyTypeObject MetricType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dynamo._core.Metric",
    .tp_basicsize = sizeof(MetricObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Metric_init,
    .tp_methods = Metric_methods};

PyObject *core_metrics_render(PyObject *m, PyObject *unused) {
  size_t len = 0;
  dyn_metrics_t *reg = dyn_metrics_default();
  char *text = reg ? dyn_metrics_render(reg, &len) : NULL;
  if (!text) return PyErr_NoMemory();
  PyObject *out = PyBytes_FromStringAndSize(text, (Py_ssize_t)len);
  free(text);
  return out;
}
