/* The analysis' per-sample work in C: `split` and `scan` of snapshots/fold.py.
 *
 * Why: they are the only steps of `memwarden analyze` that touch every sample. In Python
 * each is a C-level pass per field (`map(attrgetter)`, slices, `min`), about twenty passes
 * over the records of a chunk; as the records are scattered over memory each pass pays a
 * cache miss per record, and folding came to 2-3 us a sample, more than decoding it. Here
 * each record is read once, its fields straight from their slots.
 *
 * snapshots/fold.py is the reference: both functions return exactly what its pure-Python
 * `_split` and `_scan` return (tests/snapshots/test_fold.py compares them), and
 * `NotImplemented` for any input they do not take (records of another layout, a field of
 * an unexpected type, an integer too large for a double, times or widths that are not
 * plain numbers), which fold.py then hands to the pure-Python code. So every value is
 * computed by the same IEEE operations, in the same order, as the Python code computes it:
 *   - an integer field becomes a double as `int * float` converts it (PyLong_AsDouble);
 *   - `memory / rss` is a division of doubles only when both integers are exact as
 *     doubles (Python's integer true division is correctly rounded, so is IEEE's), else
 *     Python's own true division;
 *   - min and max keep the first of equal values, as the builtins do;
 *   - window indices and bounds are computed with Python's number protocol (float floor
 *     division is not C's floor of a quotient), once per window.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* snapshots/plausible.py: MAX_T (2^32 s) and MAX_BYTES (2^50); fold.py refuses a build
 * whose figures differ. */
#define MAX_T 4294967296.0
#define MAX_BYTES 1125899906842624.0
/* Integers of at most this magnitude are exact as doubles. */
#define EXACT_INT 9007199254740992LL

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* The offset of the object slot `name` of `type`: 1 when found, 0 when `name` is not a
 * plain object slot (the caller declines the input), -1 on error. */
static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    if (d == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int found = Py_IS_TYPE(d, &PyMemberDescr_Type)
                && ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX;
    if (found)
        *offset = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return found;
}

/* Resolve `count` slot names; 1, 0 or -1 as slot_offset. */
static int
slot_offsets(PyTypeObject *type, const char *const *names, Py_ssize_t *offsets, int count)
{
    for (int i = 0; i < count; i++) {
        int found = slot_offset(type, names[i], &offsets[i]);
        if (found <= 0)
            return found;
    }
    return 1;
}

static int
plain_number(PyObject *o)
{
    return PyFloat_CheckExact(o) || PyLong_CheckExact(o);
}

/* `value < bound` as bisect compares them (`value` a float object holding `v`). */
static int
less_than(PyObject *value, double v, PyObject *bound)
{
    if (PyFloat_CheckExact(bound))
        return v < PyFloat_AS_DOUBLE(bound);
    return PyObject_RichCompareBool(value, bound, Py_LT);
}

/* bisect.bisect_left(ts, bound, lo, hi); -1 on error. */
static Py_ssize_t
bisect_left(PyObject *ts, const double *t, PyObject *bound, Py_ssize_t lo, Py_ssize_t hi)
{
    while (lo < hi) {
        Py_ssize_t mid = (Py_ssize_t)(((size_t)lo + (size_t)hi) / 2);
        int less = less_than(PyList_GET_ITEM(ts, mid), t[mid], bound);
        if (less < 0)
            return -1;
        if (less)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* `memory / rss` as Python computes it; *declined set when it cannot (an overflow, which
 * the Python code is left to raise). */
static double
ratio(PyObject *memory, PyObject *rss, int *declined)
{
    int over_m, over_r;
    long long m = PyLong_AsLongLongAndOverflow(memory, &over_m);
    long long r = PyLong_AsLongLongAndOverflow(rss, &over_r);
    if (!over_m && !over_r && m >= -EXACT_INT && m <= EXACT_INT && r >= -EXACT_INT
        && r <= EXACT_INT)
        return (double)m / (double)r;
    PyObject *q = PyNumber_TrueDivide(memory, rss);
    if (q == NULL) {
        PyErr_Clear();
        *declined = 1;
        return 0.0;
    }
    double value = PyFloat_AsDouble(q);
    Py_DECREF(q);
    return value;
}

enum { F_T, F_MIN, F_MEAN, F_MAX, F_MEMORY, F_RSS, F_LEVEL, F_SLOPE, SCAN_FIELDS };
static const char *const SCAN_NAMES[SCAN_FIELDS] = {
    "t", "rss_min", "rss_mean", "rss_max", "memory", "rss", "level", "slope"};

/* The memory figure a sample contributes, as memory.columns gives it: the recorded object
 * when no sample of the group has `memory` (`scaled` false), else `value` as a float. */
static PyObject *
figure(PyObject *sample, Py_ssize_t offset, double value, int scaled)
{
    if (scaled)
        return PyFloat_FromDouble(value);
    PyObject *o = SLOT(sample, offset);
    Py_INCREF(o);
    return o;
}

/* The integer 1, made once. */
static PyObject *ONE;

/* op(a, b), releasing `a`; NULL when `a` is (an error passes along a chain of these). */
static PyObject *
then(binaryfunc op, PyObject *a, PyObject *b)
{
    if (a == NULL)
        return NULL;
    PyObject *r = op(a, b);
    Py_DECREF(a);
    return r;
}

static PyObject *
window(PyObject *ts, const double *t, const double *lo, const double *mean,
       const double *hi, PyObject *const *items, const Py_ssize_t *off, int scaled,
       PyObject *origin, PyObject *width, Py_ssize_t a, Py_ssize_t n, Py_ssize_t *next)
{
    /* k = int((ts[a] - origin) // width); bound = origin + (k + 1) * width */
    PyObject *k = NULL, *bound = NULL, *mids = NULL, *result = NULL;
    PyObject *q = then(PyNumber_FloorDivide, PyNumber_Subtract(PyList_GET_ITEM(ts, a), origin),
                       width);
    if (q == NULL)
        return NULL;
    k = PyNumber_Long(q);
    Py_DECREF(q);
    if (k == NULL)
        return NULL;
    PyObject *span = then(PyNumber_Multiply, PyNumber_Add(k, ONE), width);
    if (span == NULL)
        goto done;
    bound = PyNumber_Add(origin, span);
    Py_DECREF(span);
    if (bound == NULL)
        goto done;
    Py_ssize_t b = bisect_left(ts, t, bound, a + 1, n);
    if (b < 0)
        goto done;
    if (b < a + 1) /* times out of order (clock steps) must still make progress */
        b = a + 1;
    double low = lo[a], high = hi[a];
    mids = PyList_New(b - a);
    if (mids == NULL)
        goto done;
    for (Py_ssize_t i = a; i < b; i++) {
        if (lo[i] < low)
            low = lo[i];
        if (hi[i] > high)
            high = hi[i];
        PyObject *m = figure(items[i], off[F_MEAN], mean[i], scaled);
        if (m == NULL)
            goto done;
        PyList_SET_ITEM(mids, i - a, m);
    }
    PyObject *first = PyList_GET_ITEM(ts, a);
    result = Py_BuildValue("(OOddO)", k, first, low, high, mids);
    *next = b;
done:
    Py_XDECREF(k);
    Py_XDECREF(bound);
    Py_XDECREF(mids);
    return result;
}

/* scan(group, origin, width, since, cap, head): fold.py's `_scan`, as a tuple (or None,
 * or NotImplemented). */
static PyObject *
scan(PyObject *module, PyObject *args)
{
    PyObject *group, *origin, *width, *since, *cap;
    Py_ssize_t head;
    if (!PyArg_ParseTuple(args, "OOOOOn:scan", &group, &origin, &width, &since, &cap, &head))
        return NULL;
    if (!PyList_CheckExact(group) || PyList_GET_SIZE(group) == 0 || head <= 0
        || !plain_number(origin) || !plain_number(width) || !plain_number(since)
        || !plain_number(cap))
        Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t n = PyList_GET_SIZE(group);
    PyObject *const *items = ((PyListObject *)group)->ob_item;
    PyTypeObject *type = Py_TYPE(items[0]);
    Py_ssize_t off[SCAN_FIELDS];
    int found = slot_offsets(type, SCAN_NAMES, off, SCAN_FIELDS);
    if (found <= 0) {
        if (found < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *result = NULL, *ts = NULL, *levels = NULL, *kinds = NULL, *windows = NULL;
    PyObject *heads = NULL, *tails = NULL, *top = NULL;
    int declined = 0, scaled = 0;
    double *buf = PyMem_Malloc(sizeof(double) * 5 * (size_t)n);
    if (buf == NULL)
        return PyErr_NoMemory();
    double *t = buf, *lo = buf + n, *mean = buf + 2 * n, *hi = buf + 3 * n, *slope = buf + 4 * n;
    ts = PyList_New(n);
    levels = PyList_New(n);
    kinds = PySet_New(NULL);
    windows = PyList_New(0);
    if (ts == NULL || levels == NULL || kinds == NULL || windows == NULL)
        goto done;

    /* One pass over the records: every field read once. */
    PyObject *previous_level = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = items[i];
        if (Py_TYPE(s) != type) {
            declined = 1;
            goto done;
        }
        PyObject *f[SCAN_FIELDS];
        for (int j = 0; j < SCAN_FIELDS; j++) {
            f[j] = SLOT(s, off[j]);
            if (f[j] == NULL) {
                declined = 1;
                goto done;
            }
        }
        if (!PyFloat_CheckExact(f[F_T]) || !PyFloat_CheckExact(f[F_MEAN])
            || !PyFloat_CheckExact(f[F_SLOPE]) || !PyUnicode_CheckExact(f[F_LEVEL])
            || !PyLong_CheckExact(f[F_MIN]) || !PyLong_CheckExact(f[F_MAX])
            || !PyLong_CheckExact(f[F_RSS])
            || (f[F_MEMORY] != Py_None && !PyLong_CheckExact(f[F_MEMORY]))) {
            declined = 1;
            goto done;
        }
        t[i] = PyFloat_AS_DOUBLE(f[F_T]);
        slope[i] = PyFloat_AS_DOUBLE(f[F_SLOPE]);
        double low = PyLong_AsDouble(f[F_MIN]);
        double high = PyLong_AsDouble(f[F_MAX]);
        if ((low == -1.0 || high == -1.0) && PyErr_Occurred()) {
            PyErr_Clear();
            declined = 1;
            goto done;
        }
        /* memory.columns: `memory / rss` where a sample has both (rss non-zero), 1.0
         * where not; a product with 1.0 is the figure itself. */
        double r = 1.0;
        if (f[F_MEMORY] != Py_None) {
            scaled = 1;
            if (PyObject_IsTrue(f[F_RSS])) {
                r = ratio(f[F_MEMORY], f[F_RSS], &declined);
                if (declined)
                    goto done;
            }
        }
        lo[i] = low * r;
        mean[i] = PyFloat_AS_DOUBLE(f[F_MEAN]) * r;
        hi[i] = high * r;
        Py_INCREF(f[F_T]);
        PyList_SET_ITEM(ts, i, f[F_T]);
        Py_INCREF(f[F_LEVEL]);
        PyList_SET_ITEM(levels, i, f[F_LEVEL]);
        if (previous_level == NULL || (f[F_LEVEL] != previous_level
                                       && PyUnicode_Compare(f[F_LEVEL], previous_level) != 0)) {
            if (PySet_Add(kinds, f[F_LEVEL]) < 0)
                goto done;
        }
        previous_level = f[F_LEVEL];
    }

    /* plausible.columns_ok, each min and max as the builtins take them. */
    double t_min = t[0], t_max = t[0], lo_min = lo[0], lo_max = lo[0], hi_max = hi[0];
    double mean_max = mean[0];
    for (Py_ssize_t i = 1; i < n; i++) {
        if (t[i] < t_min)
            t_min = t[i];
        if (t[i] > t_max)
            t_max = t[i];
        if (lo[i] < lo_min)
            lo_min = lo[i];
        if (lo[i] > lo_max)
            lo_max = lo[i];
        if (hi[i] > hi_max)
            hi_max = hi[i];
        if (mean[i] > mean_max)
            mean_max = mean[i];
    }
    if (!(t_min >= 0.0 && t_max < MAX_T && lo_min >= 0.0 && hi_max <= MAX_BYTES
          && mean_max <= MAX_BYTES && lo_max <= MAX_BYTES)) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }

    for (Py_ssize_t a = 0; a < n;) {
        Py_ssize_t b;
        PyObject *w = window(ts, t, lo, mean, hi, items, off, scaled, origin, width, a, n, &b);
        if (w == NULL)
            goto done;
        int failed = PyList_Append(windows, w);
        Py_DECREF(w);
        if (failed)
            goto done;
        a = b;
    }

    /* The highest slope from the first sample at or after `since`. */
    Py_ssize_t start = bisect_left(ts, t, since, 0, n);
    if (start < 0)
        goto done;
    if (start < n) {
        Py_ssize_t best = start;
        for (Py_ssize_t i = start + 1; i < n; i++)
            if (slope[i] > slope[best])
                best = i;
        top = SLOT(items[best], off[F_SLOPE]);
    } else {
        top = Py_None;
    }
    Py_INCREF(top);

    /* Some gap over `cap`: the largest difference of consecutive times, compared. */
    int gapped = 0;
    if (n > 1) {
        double gap = t[1] - t[0];
        for (Py_ssize_t i = 2; i < n; i++)
            if (t[i] - t[i - 1] > gap)
                gap = t[i] - t[i - 1];
        if (PyFloat_CheckExact(cap)) {
            gapped = gap > PyFloat_AS_DOUBLE(cap);
        } else {
            PyObject *g = PyFloat_FromDouble(gap);
            if (g == NULL)
                goto done;
            gapped = PyObject_RichCompareBool(g, cap, Py_GT);
            Py_DECREF(g);
            if (gapped < 0)
                goto done;
        }
    }

    Py_ssize_t first = head < n ? head : n, last = n - first;
    heads = PyList_New(first);
    tails = PyList_New(first);
    if (heads == NULL || tails == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < first; i++) {
        PyObject *m = figure(items[i], off[F_MEAN], mean[i], scaled);
        if (m == NULL)
            goto done;
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(ts, i), m);
        Py_DECREF(m);
        if (pair == NULL)
            goto done;
        PyList_SET_ITEM(heads, i, pair);
        Py_ssize_t j = last + i;
        m = figure(items[j], off[F_MEAN], mean[j], scaled);
        PyObject *h = m ? figure(items[j], off[F_MAX], hi[j], scaled) : NULL;
        PyObject *triple = h ? PyTuple_Pack(3, PyList_GET_ITEM(ts, j), m, h) : NULL;
        Py_XDECREF(m);
        Py_XDECREF(h);
        if (triple == NULL)
            goto done;
        PyList_SET_ITEM(tails, i, triple);
    }
    result = PyTuple_Pack(8, ts, levels, kinds, windows, heads, tails, top,
                          gapped ? Py_True : Py_False);
done:
    PyMem_Free(buf);
    Py_XDECREF(ts);
    Py_XDECREF(levels);
    Py_XDECREF(kinds);
    Py_XDECREF(windows);
    Py_XDECREF(heads);
    Py_XDECREF(tails);
    Py_XDECREF(top);
    if (declined && !PyErr_Occurred()) {
        Py_XDECREF(result);
        Py_RETURN_NOTIMPLEMENTED;
    }
    return result;
}

enum { S_WORKER, S_GENERATION, S_LIMIT, S_DROPPED, SPLIT_FIELDS };
static const char *const SPLIT_NAMES[SPLIT_FIELDS] = {"worker", "generation", "limit",
                                                      "dropped"};

/* split(records, sample): fold.py's `_split`, each group as a list [samples, generation,
 * limit, dropped] (or NotImplemented). */
static PyObject *
split(PyObject *module, PyObject *args)
{
    PyObject *records, *sample;
    if (!PyArg_ParseTuple(args, "OO:split", &records, &sample))
        return NULL;
    if (!PyList_CheckExact(records) || !PyType_Check(sample))
        Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t off[SPLIT_FIELDS];
    int found = slot_offsets((PyTypeObject *)sample, SPLIT_NAMES, off, SPLIT_FIELDS);
    if (found <= 0) {
        if (found < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *others = PyList_New(0), *groups = PyDict_New(), *result = NULL;
    int declined = 0;
    if (others == NULL || groups == NULL)
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(records);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyList_GET_ITEM(records, i);
        if (Py_TYPE(r) != (PyTypeObject *)sample) {
            int is = PyObject_IsInstance(r, sample);
            if (is < 0)
                goto done;
            if (!is) {
                if (PyList_Append(others, r) < 0)
                    goto done;
                continue;
            }
        }
        PyObject *name = SLOT(r, off[S_WORKER]), *gen = SLOT(r, off[S_GENERATION]);
        PyObject *limit = SLOT(r, off[S_LIMIT]), *dropped = SLOT(r, off[S_DROPPED]);
        if (name == NULL || gen == NULL || limit == NULL || dropped == NULL
            || !PyUnicode_CheckExact(name) || !PyLong_CheckExact(gen)
            || !PyLong_CheckExact(dropped) || (limit != Py_None && !PyLong_CheckExact(limit))) {
            declined = 1;
            goto done;
        }
        PyObject *entry = PyDict_GetItemWithError(groups, name);
        if (entry == NULL) {
            if (PyErr_Occurred())
                goto done;
            entry = Py_BuildValue("[[]OOi]", gen, Py_None, 0);
            if (entry == NULL)
                goto done;
            int failed = PyDict_SetItem(groups, name, entry);
            Py_DECREF(entry);
            if (failed)
                goto done;
        }
        if (PyList_Append(PyList_GET_ITEM(entry, 0), r) < 0)
            goto done;
        PyObject *common = PyList_GET_ITEM(entry, 1);
        if (common != Py_None && common != gen) {
            int same = PyObject_RichCompareBool(common, gen, Py_EQ);
            if (same < 0)
                goto done;
            if (!same) {
                Py_INCREF(Py_None);
                PyList_SetItem(entry, 1, Py_None);
            }
        }
        if (limit != Py_None && PyObject_IsTrue(limit)) {
            Py_INCREF(limit);
            PyList_SetItem(entry, 2, limit);
        }
        if (PyObject_IsTrue(dropped)) {
            PyObject *sum = PyNumber_Add(PyList_GET_ITEM(entry, 3), dropped);
            if (sum == NULL)
                goto done;
            PyList_SetItem(entry, 3, sum);
        }
    }
    result = PyTuple_Pack(2, others, groups);
done:
    Py_XDECREF(others);
    Py_XDECREF(groups);
    if (declined)
        Py_RETURN_NOTIMPLEMENTED;
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(group, origin, width, since, cap, head): snapshots.fold._scan as a tuple."},
    {"split", split, METH_VARARGS,
     "split(records, sample): snapshots.fold._split, each group as a list."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "snapshots._fold",
    "The per-sample work of the analysis in C (see snapshots/fold.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fold(void)
{
    ONE = PyLong_FromLong(1);
    if (ONE == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "MAX_T", PyFloat_FromDouble(MAX_T)) < 0
        || PyModule_AddObject(m, "MAX_BYTES", PyFloat_FromDouble(MAX_BYTES)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
