/* The sampler's compiled ticker: the tick loop of supervisor/sensing/ticker.py in C.
 *
 * Why: after each 1 ms sleep the interpreter runs cold, and the Python tick loop cost
 * about twice a C loop doing the same reads on the same deadlines (5.4 % of a core against
 * 2.7 % for one idle worker, 12.5 % against 5.7 % for a tree of 30, on a 2-vCPU VM). This
 * loop holds no GIL while it sleeps and reads, and takes it only for Python work: work
 * queued by the other threads, a value outside its classifier's quiet band, a process of
 * a tree gone, the container's usage near a headroom line. Measured here, its thread costs
 * what the C reference loop costs (one idle worker: 1.1-1.5 % against the reference's
 * 1.1-1.4 % and the Python ticker's 3.2-4.0 %; 100 statm reads a tick: 9.9 % against
 * 8.5-10.2 %).
 *
 * `run(ticker, control, interval_ns, page_size, container_fd, stat_gate, notify_fd)` is
 * called on
 * the sampler's ticker thread and returns when `control[STOP]` is set. It reads from the
 * ticker, with the GIL held: `probes` (a tuple of probes), and per probe `usage_fd` (>= 0:
 * one cgroup usage file), `sources` (((statm fd, fixed-point scale), ...) otherwise),
 * `offset`, `ring.storage` (an array('q'): samples, then head, count, appends) and
 * `band.lo`/`band.hi` (the classifier's quiet band). It calls back, with the GIL held:
 * `drain(now)` when `control[PENDING]` is set, `drop_lost(probe)` after a statm read
 * failed, `observe(probe, now, memory)` for a value outside the band,
 * `container_tick(now)` when usage minus `control[INACTIVE]` reaches `stat_gate`, and
 * `tick_failed(exception)` when any of these raises.
 *
 * With `notify_fd` >= 0 (the epoll set of the kernel's notifications, linux/notify.py) the
 * wait for the next deadline is a ppoll on it instead of a sleep: when it becomes readable
 * the loop calls `notified(now)`, which reads what fired and returns how many immediate
 * ticks to run (the classifier's confirming run), runs them at once on fresh reads, then
 * calls `settled()`. Immediate ticks are not ticks of the schedule: they move no deadline
 * and no counter but NOTIFIED.
 *
 * The table of what to read is a copy, brought up to date after a drain or a dropped
 * reader: rebuilt when the Python side replaced the tuple of probes or a probe's sources,
 * else only offsets and bands refreshed. The Python side changes what the ticker reads,
 * and closes the descriptors it retires, only on this thread (inside `drain`), so no
 * descriptor is closed under a read. The table holds a reference to each probe and an
 * export of each ring's storage, so neither goes away or moves while it is read.
 *
 * Nothing allocates per tick: the table is rebuilt only when probes change.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The control array: counters, flags and the container's figures, shared with Python
 * (supervisor/sensing/layout.py keeps the same order; LAYOUT below lets it refuse a
 * stale build). */
enum { PENDING, STOP, TICKS, LATE, MISSED, MAX_LATE_NS, USAGE, INACTIVE, NOTIFIED,
       CONTROL_SLOTS };
/* The ring's state after its samples (supervisor/sensing/ring.py: HEAD, COUNT, APPENDS). */
enum { R_HEAD, R_COUNT, R_APPENDS, RING_STATE };

#define LAYOUT "control:pending,stop,ticks,late,missed,max_late_ns,usage,inactive,notified;" \
               "ring:samples,head,count,appends;3"

#define READ_BYTES 64 /* procfs.StatmReader.BYTES: statm's first two numbers fit */
#define SCALE_SHIFT 16 /* pss.SCALE_SHIFT */

/* What the loop touches for one probe each tick, in one cache line: after a 1 ms sleep
 * every line is cold, and with 100 probes the first layout (everything in one struct of
 * three lines) made the loop cost 1.6x the reference loop's. This thread is the ring's
 * only writer while it runs, so it keeps the ring's head and appends here and only
 * stores them into the ring's state (a load there would wait for the line). */
typedef struct {
    int64_t *data; /* the ring's samples; its state (head, count, appends) follows them */
    int64_t appends;
    int64_t offset;
    double lo, hi; /* the quiet band */
    int32_t capacity, head;
    int32_t usage_fd; /* >= 0: cgroup mode */
    int32_t first, count; /* its statm sources in Table.sources */
    char read, lost;
} Hot;

typedef struct {
    PyObject *probe;   /* strong */
    PyObject *sources; /* strong: its identity tells when Python replaced the sources */
    Py_buffer ring;    /* the exported ring storage: kept alive and never resized */
} Cold;

typedef struct {
    int fd;
    int64_t scale;
} Source;

typedef struct {
    PyObject *sampler;
    PyObject *probes; /* strong: the tuple the table was built from */
    Hot *hot;
    Cold *cold;
    Py_ssize_t n, room;
    Source *sources;
    Py_ssize_t sources_room;
    int64_t *control;
    int64_t page_size;
} Table;

static PyObject *s_probes, *s_usage_fd, *s_sources, *s_offset, *s_ring, *s_storage, *s_band,
    *s_lo, *s_hi, *s_drain, *s_drop_lost, *s_observe, *s_container_tick, *s_tick_failed,
    *s_notified, *s_settled;

static inline int64_t load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* pread without glibc's cancellation-point wrapper: in a process with threads it does two
 * atomic operations around every call (8 % of this loop's time with 100 statm reads),
 * which the single-threaded reference loop is spared. */
static inline ssize_t read_at_0(int fd, char *buf)
{
    return syscall(SYS_pread64, fd, buf, (size_t)READ_BYTES, (off_t)0);
}

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The unsigned decimal at *p (after blanks), or -1 when there is none before `end`. */
static int64_t number(const char **p, const char *end)
{
    const char *c = *p;
    while (c < end && (*c == ' ' || *c == '\t'))
        c++;
    if (c == end || *c < '0' || *c > '9')
        return -1;
    int64_t v = 0;
    while (c < end && *c >= '0' && *c <= '9')
        v = v * 10 + (*c++ - '0');
    *p = c;
    return v;
}

/* -- the table (GIL held) ----------------------------------------------------------- */

static void release_entries(Table *t)
{
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Cold *c = &t->cold[i];
        PyBuffer_Release(&c->ring);
        Py_CLEAR(c->probe);
        Py_CLEAR(c->sources);
    }
    t->n = 0;
    Py_CLEAR(t->probes);
}

static int get_int64(PyObject *obj, PyObject *name, int64_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int refresh_band(Hot *h, PyObject *probe)
{
    PyObject *band = PyObject_GetAttr(probe, s_band);
    if (band == NULL)
        return -1;
    PyObject *lo = PyObject_GetAttr(band, s_lo), *hi = PyObject_GetAttr(band, s_hi);
    Py_DECREF(band);
    int rc = -1;
    if (lo != NULL && hi != NULL) {
        h->lo = PyFloat_AsDouble(lo);
        h->hi = PyFloat_AsDouble(hi);
        rc = PyErr_Occurred() ? -1 : 0;
    }
    Py_XDECREF(lo);
    Py_XDECREF(hi);
    return rc;
}

/* Export a ring's storage into `view`; return its capacity, or -1 with an exception. */
static Py_ssize_t ring_view(PyObject *storage, Py_buffer *view)
{
    if (PyObject_GetBuffer(storage, view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
        return -1;
    Py_ssize_t slots = view->len / 8;
    if (view->itemsize != 8 || strcmp(view->format, "q") != 0 || slots < 2 + RING_STATE
        || (slots - RING_STATE) % 2 || (slots - RING_STATE) / 2 > INT32_MAX) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "a ring's storage must be array('q', 2n + 3)");
        return -1;
    }
    return (slots - RING_STATE) / 2;
}

/* Ring.append, for a ring whose head and appends the caller keeps: the sample first, then
 * head, count and appends, each released, in the order the Python readers rely on. */
static inline void ring_append(int64_t *d, int32_t capacity, int32_t *head, int64_t *appends,
                               int64_t t_ns, int64_t value)
{
    int64_t *state = d + 2 * (int64_t)capacity;
    d[2 * (int64_t)*head] = t_ns;
    d[2 * (int64_t)*head + 1] = value;
    *head = *head + 1 == capacity ? 0 : *head + 1;
    store(&state[R_HEAD], *head);
    if (*appends < capacity) /* count is min(appends, capacity) */
        store(&state[R_COUNT], *appends + 1);
    store(&state[R_APPENDS], ++*appends);
}

static int fill_entry(Table *t, Py_ssize_t i, PyObject *probe, Py_ssize_t *first)
{
    Hot *h = &t->hot[i];
    Cold *c = &t->cold[i];
    int64_t fd;
    c->probe = Py_NewRef(probe);
    if (get_int64(probe, s_usage_fd, &fd) < 0 || get_int64(probe, s_offset, &h->offset) < 0
        || refresh_band(h, probe) < 0)
        return -1;
    h->usage_fd = (int32_t)fd;
    PyObject *ring = PyObject_GetAttr(probe, s_ring);
    if (ring == NULL)
        return -1;
    PyObject *storage = PyObject_GetAttr(ring, s_storage);
    Py_DECREF(ring);
    if (storage == NULL)
        return -1;
    Py_ssize_t capacity = ring_view(storage, &c->ring);
    Py_DECREF(storage);
    if (capacity < 0)
        return -1;
    h->data = c->ring.buf;
    h->capacity = (int32_t)capacity;
    const int64_t *state = h->data + 2 * (int64_t)h->capacity;
    h->head = (int32_t)state[R_HEAD];
    h->appends = state[R_APPENDS];
    PyObject *sources = PyObject_GetAttr(probe, s_sources);
    if (sources == NULL)
        return -1;
    c->sources = sources;
    if (!PyTuple_Check(sources)) {
        PyErr_SetString(PyExc_TypeError, "a probe's sources must be a tuple");
        return -1;
    }
    h->first = (int32_t)*first;
    h->count = h->usage_fd >= 0 ? 0 : (int32_t)PyTuple_GET_SIZE(sources);
    for (Py_ssize_t j = 0; j < h->count; j++) {
        PyObject *pair = PyTuple_GET_ITEM(sources, j);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a source must be (fd, scale)");
            return -1;
        }
        long fd_j = PyLong_AsLong(PyTuple_GET_ITEM(pair, 0));
        long long scale = PyLong_AsLongLong(PyTuple_GET_ITEM(pair, 1));
        if (PyErr_Occurred())
            return -1;
        t->sources[*first] = (Source){.fd = (int)fd_j, .scale = scale};
        (*first)++;
    }
    return 0;
}

static int rebuild(Table *t, PyObject *probes)
{
    release_entries(t);
    if (!PyTuple_Check(probes)) {
        PyErr_SetString(PyExc_TypeError, "the sampler's probes must be a tuple");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(probes), sources = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyObject_GetAttr(PyTuple_GET_ITEM(probes, i), s_sources);
        if (s == NULL)
            return -1;
        Py_ssize_t len = PyObject_Length(s);
        Py_DECREF(s);
        if (len < 0)
            return -1;
        sources += len;
    }
    if (sources > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many statm sources");
        return -1;
    }
    if (n > t->room) {
        Hot *hot = PyMem_RawRealloc(t->hot, n * sizeof(Hot));
        if (hot != NULL)
            t->hot = hot;
        Cold *cold = PyMem_RawRealloc(t->cold, n * sizeof(Cold));
        if (cold != NULL)
            t->cold = cold;
        if (hot == NULL || cold == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->room = n;
    }
    if (sources > t->sources_room) {
        Source *grown = PyMem_RawRealloc(t->sources, sources * sizeof(Source));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->sources = grown;
        t->sources_room = sources;
    }
    t->probes = Py_NewRef(probes);
    Py_ssize_t first = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        memset(&t->hot[i], 0, sizeof(Hot));
        memset(&t->cold[i], 0, sizeof(Cold));
        t->n = i + 1; /* released by release_entries even when filling fails half way */
        if (fill_entry(t, i, PyTuple_GET_ITEM(probes, i), &first) < 0) {
            release_entries(t);
            return -1;
        }
    }
    return 0;
}

/* Bring the table in line with the sampler's probes: rebuilt when the tuple of probes or
 * any probe's sources changed, else only offsets and bands refreshed. On failure the
 * table is left empty (nothing is read until the next successful sync). */
static int sync_table(Table *t)
{
    PyObject *probes = PyObject_GetAttr(t->sampler, s_probes);
    if (probes == NULL) {
        release_entries(t);
        return -1;
    }
    int same = probes == t->probes, rc = 0;
    for (Py_ssize_t i = 0; same && i < t->n; i++) {
        Hot *h = &t->hot[i];
        PyObject *probe = t->cold[i].probe;
        PyObject *sources = PyObject_GetAttr(probe, s_sources);
        int64_t fd;
        if (sources == NULL || get_int64(probe, s_usage_fd, &fd) < 0) {
            Py_XDECREF(sources);
            rc = -1;
            break;
        }
        same = sources == t->cold[i].sources && fd == h->usage_fd;
        Py_DECREF(sources);
        if (same && (get_int64(probe, s_offset, &h->offset) < 0 || refresh_band(h, probe) < 0)) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && !same)
        rc = rebuild(t, probes);
    else if (rc < 0)
        release_entries(t);
    Py_DECREF(probes);
    return rc;
}

/* -- calls into Python (GIL held) ---------------------------------------------------- */

/* A failure is handed to the sampler's `tick_failed` (which logs it): a bug must not
 * end sampling. */
static void failed(Table *t)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc != NULL && tb != NULL)
        PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    PyObject *r = PyObject_CallMethodOneArg(t->sampler, s_tick_failed, exc);
    if (r == NULL)
        PyErr_WriteUnraisable(t->sampler);
    Py_XDECREF(r);
    Py_XDECREF(exc);
}

static void call(Table *t, PyObject *name, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *r = PyObject_CallMethodObjArgs(t->sampler, name, a, b, c, NULL);
    if (r == NULL)
        failed(t);
    Py_XDECREF(r);
}

static void call_now(Table *t, PyObject *name, int64_t now)
{
    PyObject *when = PyLong_FromLongLong(now);
    if (when == NULL) {
        failed(t);
        return;
    }
    call(t, name, when, NULL, NULL);
    Py_DECREF(when);
}

static int64_t newest(const Hot *h)
{
    int32_t at = (h->head ? h->head : h->capacity) - 1;
    return h->data[2 * (int64_t)at + 1];
}

static inline int outside(const Hot *h, int64_t memory)
{
    return !(h->lo <= (double)memory && (double)memory < h->hi);
}

/* -- the tick (no GIL) ---------------------------------------------------------------- */

/* Read every probe, append to its ring and test its band; return whether any probe needs
 * Python (a value outside its band, a reader lost). */
static int read_probes(Table *t, int64_t now, char *buf)
{
    int python = 0;
    const int64_t page = t->page_size;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Hot *h = &t->hot[i];
        int64_t memory;
        h->read = h->lost = 0;
        if (h->usage_fd >= 0) { /* cgroup mode: the kernel's figure for the generation */
            ssize_t got = read_at_0(h->usage_fd, buf);
            const char *p = buf;
            int64_t usage = got > 0 ? number(&p, buf + got) : -1;
            if (usage < 0)
                continue; /* its cgroup is gone: the generation has ended */
            memory = usage + h->offset;
            if (memory < 0)
                memory = 0;
        } else {
            int64_t total = 0;
            const Source *s = t->sources + h->first, *end = s + h->count;
            for (; s < end; s++) {
                ssize_t got = read_at_0(s->fd, buf);
                const char *p = buf, *stop = buf + (got > 0 ? got : 0);
                /* "size resident shared ...": the resident pages, second number. */
                int64_t resident = number(&p, stop) >= 0 ? number(&p, stop) : -1;
                if (resident >= 0)
                    total += resident * s->scale;
                else /* gone (ESRCH) or nothing to read */
                    h->lost = 1;
            }
            /* (total * page) >> 16 without overflowing: split total at the shift. */
            memory = (total >> SCALE_SHIFT) * page
                + (((total & ((1 << SCALE_SHIFT) - 1)) * page) >> SCALE_SHIFT) + h->offset;
        }
        h->read = 1;
        ring_append(h->data, h->capacity, &h->head, &h->appends, now, memory);
        if (h->lost || outside(h, memory))
            python = 1;
    }
    return python;
}

/* The Python part of a tick: values outside their band, lost readers, the container. */
static void python_part(Table *t, int64_t now, int container)
{
    int lost = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Hot *h = &t->hot[i];
        int64_t memory = newest(h);
        if (!h->read || !outside(h, memory))
            continue;
        PyObject *when = PyLong_FromLongLong(now), *value = PyLong_FromLongLong(memory);
        if (when != NULL && value != NULL)
            call(t, s_observe, t->cold[i].probe, when, value);
        else
            failed(t);
        Py_XDECREF(when);
        Py_XDECREF(value);
        if (refresh_band(h, t->cold[i].probe) < 0)
            failed(t);
    }
    for (Py_ssize_t i = 0; i < t->n; i++) {
        if (t->hot[i].lost) {
            call(t, s_drop_lost, t->cold[i].probe, NULL, NULL);
            lost = 1;
        }
    }
    if (lost && sync_table(t) < 0)
        failed(t);
    if (container)
        call_now(t, s_container_tick, now);
}

/* The reads of one tick, scheduled or immediate (no GIL on entry or exit). */
static PyThreadState *tick(Table *t, PyThreadState *ts, int64_t now, char *buf,
                           int container_fd, int64_t stat_gate)
{
    int64_t *c = t->control;
    int python = read_probes(t, now, buf);
    int container = 0;
    if (container_fd >= 0) { /* the container's usage, every tick */
        ssize_t got = read_at_0(container_fd, buf);
        const char *p = buf;
        int64_t usage = got > 0 ? number(&p, buf + got) : -1;
        store(&c[USAGE], usage);
        /* memory.stat only near a headroom line: see Ticker.container_tick */
        container = usage - load(&c[INACTIVE]) >= stat_gate;
    }
    if (python || container) {
        PyEval_RestoreThread(ts);
        python_part(t, now, container);
        ts = PyEval_SaveThread();
    }
    return ts;
}

/* Notifications are ready: ask Python how many immediate ticks they call for, run them. */
static PyThreadState *notified(Table *t, PyThreadState *ts, char *buf, int container_fd,
                               int64_t stat_gate)
{
    PyEval_RestoreThread(ts);
    long long burst = 0;
    PyObject *when = PyLong_FromLongLong(monotonic_ns());
    PyObject *r = when ? PyObject_CallMethodOneArg(t->sampler, s_notified, when) : NULL;
    Py_XDECREF(when);
    if (r != NULL) {
        burst = PyLong_AsLongLong(r);
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) {
        failed(t);
        burst = 0;
    }
    if (sync_table(t) < 0) /* offsets and bands it may have moved */
        failed(t);
    ts = PyEval_SaveThread();
    for (long long i = 0; i < burst && !load(&t->control[STOP]); i++)
        ts = tick(t, ts, monotonic_ns(), buf, container_fd, stat_gate);
    PyEval_RestoreThread(ts);
    r = PyObject_CallMethodNoArgs(t->sampler, s_settled);
    if (r == NULL)
        failed(t);
    Py_XDECREF(r);
    return PyEval_SaveThread();
}

static PyObject *run(PyObject *module, PyObject *args)
{
    PyObject *sampler, *control_obj;
    long long interval, page_size, stat_gate;
    int container_fd, notify_fd;
    if (!PyArg_ParseTuple(args, "OOLLiLi:run", &sampler, &control_obj, &interval, &page_size,
                          &container_fd, &stat_gate, &notify_fd))
        return NULL;
    if (interval <= 0 || page_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "interval and page size must be positive");
        return NULL;
    }
    Py_buffer control_view;
    if (PyObject_GetBuffer(control_obj, &control_view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
        return NULL;
    if (control_view.itemsize != 8 || strcmp(control_view.format, "q") != 0
        || control_view.len < CONTROL_SLOTS * 8) {
        PyBuffer_Release(&control_view);
        PyErr_SetString(PyExc_TypeError, "control must be an array('q') of the layout's size");
        return NULL;
    }
    Table t = {.sampler = sampler, .control = control_view.buf, .page_size = page_size};
    int64_t *c = t.control;
    if (sync_table(&t) < 0) {
        release_entries(&t);
        PyBuffer_Release(&control_view);
        return NULL;
    }
    char buf[READ_BYTES];
    const int64_t tolerance = interval / 10;
    int64_t ticks = c[TICKS], late_ticks = c[LATE], missed = c[MISSED], max_late = c[MAX_LATE_NS];
    PyThreadState *ts = PyEval_SaveThread();
    int64_t deadline = monotonic_ns() + interval;
    while (!load(&c[STOP])) {
        int64_t now = monotonic_ns();
        if (now < deadline && notify_fd >= 0) {
            /* ppoll takes a relative timeout: measured again after every wake */
            struct pollfd pfd = {.fd = notify_fd, .events = POLLIN};
            while (now < deadline && !load(&c[STOP])) {
                struct timespec left = {.tv_sec = (deadline - now) / 1000000000,
                                        .tv_nsec = (deadline - now) % 1000000000};
                if (ppoll(&pfd, 1, &left, NULL) > 0) {
                    __atomic_store_n(&c[NOTIFIED], c[NOTIFIED] + 1, __ATOMIC_RELAXED);
                    ts = notified(&t, ts, buf, container_fd, stat_gate);
                }
                now = monotonic_ns();
            }
        } else if (now < deadline) {
            struct timespec at = {.tv_sec = deadline / 1000000000,
                                  .tv_nsec = deadline % 1000000000};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
                ;
            now = monotonic_ns();
        }
        int64_t late = now - deadline;
        if (late >= interval) {
            int64_t skipped = late / interval;
            missed += skipped;
            deadline += skipped * interval;
            __atomic_store_n(&c[MISSED], missed, __ATOMIC_RELAXED);
        }
        if (late > tolerance)
            __atomic_store_n(&c[LATE], ++late_ticks, __ATOMIC_RELAXED);
        if (late > max_late)
            __atomic_store_n(&c[MAX_LATE_NS], max_late = late, __ATOMIC_RELAXED);

        if (load(&c[PENDING])) { /* work queued by the other threads: run it here */
            PyEval_RestoreThread(ts);
            store(&c[PENDING], 0); /* before draining: work queued meanwhile sets it again */
            call_now(&t, s_drain, now);
            if (sync_table(&t) < 0)
                failed(&t);
            ts = PyEval_SaveThread();
        }
        ts = tick(&t, ts, now, buf, container_fd, stat_gate);
        __atomic_store_n(&c[TICKS], ++ticks, __ATOMIC_RELAXED);
        deadline += interval;
    }
    PyEval_RestoreThread(ts);
    release_entries(&t);
    PyMem_RawFree(t.hot);
    PyMem_RawFree(t.cold);
    PyMem_RawFree(t.sources);
    PyBuffer_Release(&control_view);
    Py_RETURN_NONE;
}

static PyObject *append(PyObject *module, PyObject *args)
{
    PyObject *storage;
    long long t_ns, value;
    if (!PyArg_ParseTuple(args, "OLL:append", &storage, &t_ns, &value))
        return NULL;
    Py_buffer view;
    Py_ssize_t capacity = ring_view(storage, &view);
    if (capacity < 0)
        return NULL;
    int64_t *d = view.buf, *state = d + 2 * capacity;
    int32_t head = (int32_t)state[R_HEAD];
    int64_t appends = state[R_APPENDS];
    ring_append(d, (int32_t)capacity, &head, &appends, t_ns, value);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS,
     "run(ticker, control, interval_ns, page_size, container_fd, stat_gate, notify_fd)\n--\n\n"
     "Run the sampler's tick loop on this thread until control[STOP] is set; the GIL is\n"
     "held only for Python work. See the top of supervisor/_ticker.c for the contract."},
    {"append", append, METH_VARARGS,
     "append(storage, t_ns, value)\n--\n\n"
     "Append one sample to a ring's storage the way the loop does (Ring.append in C): the\n"
     "tests of the ring's shared layout run their appends through it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "supervisor.sensing._ticker",
    "The sampler's tick loop in C (optional: supervisor.sensing.ticker falls back to Python).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__ticker(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_probes, "probes"}, {&s_usage_fd, "usage_fd"}, {&s_sources, "sources"},
        {&s_offset, "offset"}, {&s_ring, "ring"}, {&s_storage, "storage"}, {&s_band, "band"},
        {&s_lo, "lo"}, {&s_hi, "hi"}, {&s_drain, "drain"}, {&s_drop_lost, "drop_lost"},
        {&s_observe, "observe"}, {&s_container_tick, "container_tick"},
        {&s_tick_failed, "tick_failed"}, {&s_notified, "notified"}, {&s_settled, "settled"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].name))
            == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "LAYOUT", LAYOUT) < 0)
        Py_CLEAR(m);
    return m;
}
