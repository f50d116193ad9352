/* actormesh.observability._speedups: MeshTracer's per-message work in C.
 *
 * The pure-Python `_native` module is the definition; this file does the same
 * for the three things every traced message pays for: a consumer span's life
 * (parse `traceparent`, start, make it the current OpenTelemetry span, end,
 * encode, queue), a `tell_many` producer span (ids, `traceparent`, encode,
 * queue), and the queue in front of the export thread (`Recorder`). Everything
 * rarer (attributes, events, errors, span contexts) stays in Python, in the
 * subclasses `_native` makes of `SpanCore`.
 *
 * Ids come from the kernel's random source, 256 bytes at a time; a fork empties
 * the buffer so that a child never repeats its parent's ids.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#if defined(__linux__) || defined(__APPLE__)
#include <sys/random.h>
#endif
#include <unistd.h>

/* -- module state (set once by `init`) ------------------------------------------ */

static PyObject *context_var;    /* the OpenTelemetry runtime context's ContextVar */
static PyObject *context_type;   /* opentelemetry.context.Context */
static PyObject *empty_tuple;
static PyObject *empty_bytes;
static PyObject *span_key;       /* the key of the current span in a Context */
static PyObject *parse_fallback; /* _native._parse_traceparent, for rare forms */
static PyObject *str_traceparent, *str_tracestate, *str_msg_id, *str_error, *str_uncommon;

static int
ready(void)
{
    if (context_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.init() has not been called");
        return 0;
    }
    return 1;
}

/* -- random ids ------------------------------------------------------------------- */

/* One system call per 170 spans or so. */
static unsigned char random_buf[4096];
static size_t random_pos = sizeof(random_buf);

static void
after_fork_child(void)
{
    random_pos = sizeof(random_buf);
}

static int
random_bytes(unsigned char *out, size_t n)
{
    if (random_pos + n > sizeof(random_buf)) {
        /* getentropy() gives at most 256 bytes a call. */
        for (size_t at = 0; at < sizeof(random_buf); at += 256) {
            if (getentropy(random_buf + at, 256) != 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
        }
        random_pos = 0;
    }
    memcpy(out, random_buf + random_pos, n);
    random_pos += n;
    return 0;
}

/* n random bytes, not all zero (a zero id is invalid). */
static int
random_id(unsigned char *out, size_t n)
{
    if (random_bytes(out, n) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i]) {
            return 0;
        }
    }
    out[n - 1] = 1;
    return 0;
}

/* -- encoding --------------------------------------------------------------------- */

static const char HEX[] = "0123456789abcdef";

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static size_t
varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 128) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *
put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 128) {
        *p++ = (unsigned char)(v & 127) | 128;
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static unsigned char *
put_fixed64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        *p++ = (unsigned char)(v >> (8 * i));
    }
    return p;
}

#define MESSAGE_ID_KEY "messaging.message.id"
#define MESSAGE_ID_KEY_LEN (sizeof(MESSAGE_ID_KEY) - 1)

/* The encoded `messaging.message.id` attribute of `msg_id` (a str), or NULL with
 * an error set. */
static PyObject *
message_id_attribute(PyObject *msg_id)
{
    Py_ssize_t n;
    PyObject *owned = NULL;
    const char *data = PyUnicode_AsUTF8AndSize(msg_id, &n);
    if (data == NULL) {
        /* Lone surrogates: encoded with replacements, as the Python code does. */
        PyErr_Clear();
        owned = PyUnicode_AsEncodedString(msg_id, "utf-8", "replace");
        if (owned == NULL) {
            return NULL;
        }
        data = PyBytes_AS_STRING(owned);
        n = PyBytes_GET_SIZE(owned);
    }
    size_t any_len = 1 + varint_len((uint64_t)n) + (size_t)n;
    size_t kv_len = 2 + MESSAGE_ID_KEY_LEN + 1 + varint_len(any_len) + any_len;
    size_t total = 1 + varint_len(kv_len) + kv_len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (out != NULL) {
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
        *p++ = 0x4a; /* Span.attributes */
        p = put_varint(p, kv_len);
        *p++ = 0x0a; /* KeyValue.key */
        *p++ = (unsigned char)MESSAGE_ID_KEY_LEN;
        memcpy(p, MESSAGE_ID_KEY, MESSAGE_ID_KEY_LEN);
        p += MESSAGE_ID_KEY_LEN;
        *p++ = 0x12; /* KeyValue.value */
        p = put_varint(p, any_len);
        *p++ = 0x0a; /* AnyValue.string_value */
        p = put_varint(p, (uint64_t)n);
        memcpy(p, data, (size_t)n);
    }
    Py_XDECREF(owned);
    return out;
}

/* A `ScopeSpans.spans` entry: the ids (encoded trace id and, for a child, parent
 * span id fields), span id, start and end, then `head`, `attr` and `extra` (each
 * encoded fields, or NULL). */
static PyObject *
encode_span(const unsigned char *ids, size_t ids_len, const unsigned char *span_id,
            int64_t start, int64_t end, PyObject *head, PyObject *attr, PyObject *extra)
{
    size_t head_len = head ? (size_t)PyBytes_GET_SIZE(head) : 0;
    size_t attr_len = attr ? (size_t)PyBytes_GET_SIZE(attr) : 0;
    size_t extra_len = extra ? (size_t)PyBytes_GET_SIZE(extra) : 0;
    size_t size = ids_len + 10 + 9 + 9 + head_len + attr_len + extra_len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(1 + varint_len(size) + size));
    if (out == NULL) {
        return NULL;
    }
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    *p++ = 0x12; /* ScopeSpans.spans */
    p = put_varint(p, size);
    memcpy(p, ids, ids_len);
    p += ids_len;
    *p++ = 0x12; /* Span.span_id */
    *p++ = 0x08;
    memcpy(p, span_id, 8);
    p += 8;
    *p++ = 0x39; /* Span.start_time_unix_nano */
    p = put_fixed64(p, (uint64_t)start);
    *p++ = 0x41; /* Span.end_time_unix_nano */
    p = put_fixed64(p, (uint64_t)end);
    if (head_len) {
        memcpy(p, PyBytes_AS_STRING(head), head_len);
        p += head_len;
    }
    if (attr_len) {
        memcpy(p, PyBytes_AS_STRING(attr), attr_len);
        p += attr_len;
    }
    if (extra_len) {
        memcpy(p, PyBytes_AS_STRING(extra), extra_len);
    }
    return out;
}

static int
hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Lower-case hex to bytes; -1 on anything else, or when every byte is zero. */
static int
unhex_id(const char *s, unsigned char *out, size_t n)
{
    unsigned char any = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value((unsigned char)s[2 * i]);
        int lo = hex_value((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
        any |= out[i];
    }
    return any ? 0 : -1;
}

static void
put_hex(char *out, const unsigned char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
}

static uint64_t
low64(const unsigned char *trace_id)
{
    uint64_t v = 0;
    for (int i = 8; i < 16; i++) {
        v = v << 8 | trace_id[i];
    }
    return v;
}

/* Sampler bound: a Python int in [0, 2**64]; `*always` when it is 2**64. */
static int
read_bound(PyObject *bound, uint64_t *value, int *always)
{
    int overflow = 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(bound);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        overflow = 1;
    }
    *always = overflow;
    *value = overflow ? 0 : (uint64_t)v;
    return 0;
}

#define TRACE_TAG0 0x0a /* Span.trace_id, 16 bytes */
#define PARENT_TAG0 0x22 /* Span.parent_span_id, 8 bytes */
#define ROOT_IDS 18
#define CHILD_IDS 28

/* -- Recorder --------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *queue;
    PyObject *append;
    PyObject *wake;
    PyObject *drop;
    PyObject *config;
    Py_ssize_t max_queue;
    Py_ssize_t batch;
    uint64_t bound;  /* the sampler's: a root is sampled when low64(trace id) < bound */
    char always;     /* bound is 2**64 */
    char parent_based;
    char closed;
    char woken;
} Recorder;

static PyTypeObject Recorder_Type;

static int
Recorder_init(Recorder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"queue",  "max_queue", "batch",        "wake", "drop",
                             "config", "bound",     "parent_based", NULL};
    PyObject *queue, *wake, *drop, *config, *bound;
    Py_ssize_t max_queue, batch;
    int parent_based;
    uint64_t bound_value;
    int always;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnnOOOOp", kwlist, &queue, &max_queue, &batch,
                                     &wake, &drop, &config, &bound, &parent_based)) {
        return -1;
    }
    if (read_bound(bound, &bound_value, &always) < 0) {
        return -1;
    }
    PyObject *append = PyObject_GetAttrString(queue, "append");
    if (append == NULL) {
        return -1;
    }
    Py_XSETREF(self->append, append);
    Py_XSETREF(self->queue, Py_NewRef(queue));
    Py_XSETREF(self->wake, Py_NewRef(wake));
    Py_XSETREF(self->drop, Py_NewRef(drop));
    Py_XSETREF(self->config, Py_NewRef(config));
    self->max_queue = max_queue;
    self->batch = batch < 1 ? 1 : batch;
    self->bound = bound_value;
    self->always = (char)always;
    self->parent_based = (char)parent_based;
    self->closed = 0;
    self->woken = 0;
    return 0;
}

/* Queue one encoded span; steals nothing. */
static int
recorder_put(Recorder *self, PyObject *span)
{
    Py_ssize_t n = PyObject_Size(self->queue);
    if (n < 0) {
        return -1;
    }
    if (n >= self->max_queue || self->closed) {
        PyObject *r = PyObject_CallNoArgs(self->drop);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *r = PyObject_CallOneArg(self->append, span);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    if (n + 1 >= self->batch && !self->woken) {
        self->woken = 1;
        r = PyObject_CallNoArgs(self->wake);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
Recorder_record(Recorder *self, PyObject *span)
{
    if (recorder_put(self, span) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
Recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->append);
    Py_VISIT(self->wake);
    Py_VISIT(self->drop);
    Py_VISIT(self->config);
    return 0;
}

static int
Recorder_clear(Recorder *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->append);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->drop);
    Py_CLEAR(self->config);
    return 0;
}

static void
Recorder_dealloc(Recorder *self)
{
    PyObject_GC_UnTrack(self);
    Recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Recorder_methods[] = {
    {"record", (PyCFunction)Recorder_record, METH_O, "Queue one encoded span for export."},
    {NULL},
};

static PyMemberDef Recorder_members[] = {
    {"config", T_OBJECT, offsetof(Recorder, config), READONLY, NULL},
    {"closed", T_BOOL, offsetof(Recorder, closed), 0, NULL},
    {"woken", T_BOOL, offsetof(Recorder, woken), 0, NULL},
    {NULL},
};

static PyTypeObject Recorder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "actormesh.observability._speedups.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The queue in front of the span export thread.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Recorder_init,
    .tp_dealloc = (destructor)Recorder_dealloc,
    .tp_traverse = (traverseproc)Recorder_traverse,
    .tp_clear = (inquiry)Recorder_clear,
    .tp_methods = Recorder_methods,
    .tp_members = Recorder_members,
};

/* -- SpanCore ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *recorder;     /* Recorder, or None when not sampled */
    PyObject *ids;          /* bytes: trace id [+ parent span id] fields */
    PyObject *span_id;      /* bytes (8) */
    PyObject *trace_state;  /* str or None */
    PyObject *head;         /* bytes */
    PyObject *msg_id;       /* str or None */
    PyObject *token;        /* contextvars.Token or NULL */
    PyObject *more;         /* Python-managed annotations, or None */
    PyObject *span_context; /* cached SpanContext, or None */
    long long start;
    char attach;
    char ended;
    char failed;
} SpanCore;

static PyTypeObject SpanCore_Type;

static SpanCore *
span_alloc(PyTypeObject *cls)
{
    SpanCore *self = (SpanCore *)cls->tp_alloc(cls, 0);
    if (self != NULL) {
        self->more = Py_NewRef(Py_None);
        self->span_context = Py_NewRef(Py_None);
    }
    return self;
}

static int
SpanCore_init(SpanCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *recorder, *ids, *span_id, *trace_state, *head, *msg_id;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "SpanCore takes positional arguments only");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OSSOSO", &recorder, &ids, &span_id, &trace_state, &head,
                          &msg_id)) {
        return -1;
    }
    if (PyBytes_GET_SIZE(span_id) != 8 ||
        (PyBytes_GET_SIZE(ids) != ROOT_IDS && PyBytes_GET_SIZE(ids) != CHILD_IDS)) {
        PyErr_SetString(PyExc_ValueError, "bad span ids");
        return -1;
    }
    if (recorder != Py_None && !PyObject_TypeCheck(recorder, &Recorder_Type)) {
        PyErr_SetString(PyExc_TypeError, "recorder must be a Recorder or None");
        return -1;
    }
    Py_XSETREF(self->recorder, Py_NewRef(recorder));
    Py_XSETREF(self->ids, Py_NewRef(ids));
    Py_XSETREF(self->span_id, Py_NewRef(span_id));
    Py_XSETREF(self->trace_state, Py_NewRef(trace_state));
    Py_XSETREF(self->head, Py_NewRef(head));
    Py_XSETREF(self->msg_id, Py_NewRef(msg_id));
    self->start = now_ns();
    return 0;
}

static int
SpanCore_traverse(SpanCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->recorder);
    Py_VISIT(self->token);
    Py_VISIT(self->more);
    Py_VISIT(self->span_context);
    return 0;
}

static int
SpanCore_clear(SpanCore *self)
{
    Py_CLEAR(self->recorder);
    Py_CLEAR(self->ids);
    Py_CLEAR(self->span_id);
    Py_CLEAR(self->trace_state);
    Py_CLEAR(self->head);
    Py_CLEAR(self->msg_id);
    Py_CLEAR(self->token);
    Py_CLEAR(self->more);
    Py_CLEAR(self->span_context);
    return 0;
}

static void
SpanCore_dealloc(SpanCore *self)
{
    /* A static type: a heap subclass's own dealloc releases its type. */
    PyObject_GC_UnTrack(self);
    SpanCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
SpanCore_enter(SpanCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->attach && self->token == NULL) {
        if (!ready()) {
            return NULL;
        }
        PyObject *current = NULL;
        if (PyContextVar_Get(context_var, NULL, &current) < 0) {
            return NULL;
        }
        /* A new Context (a dict subclass that refuses item assignment from
         * Python): the current one's items and this span, filled at the C level. */
        PyObject *ctx = PyDict_Type.tp_new((PyTypeObject *)context_type, empty_tuple, NULL);
        if (ctx == NULL) {
            Py_XDECREF(current);
            return NULL;
        }
        int rc = 0;
        if (current != NULL && PyDict_Check(current) && PyDict_GET_SIZE(current)) {
            rc = PyDict_Merge(ctx, current, 1);
        }
        Py_XDECREF(current);
        if (rc < 0 || PyDict_SetItem(ctx, span_key, (PyObject *)self) < 0) {
            Py_DECREF(ctx);
            return NULL;
        }
        self->token = PyContextVar_Set(context_var, ctx);
        Py_DECREF(ctx);
        if (self->token == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(self);
}

static int
span_end(SpanCore *self, int64_t end)
{
    if (self->ended) {
        return 0;
    }
    self->ended = 1;
    if (self->recorder == NULL || self->recorder == Py_None) {
        return 0;
    }
    PyObject *attr = NULL, *extra = NULL, *encoded;
    int rc = -1;
    if (self->msg_id != NULL && PyUnicode_Check(self->msg_id) &&
        PyUnicode_GET_LENGTH(self->msg_id)) {
        attr = message_id_attribute(self->msg_id);
        if (attr == NULL) {
            return -1;
        }
    }
    if ((self->trace_state != NULL && PyObject_IsTrue(self->trace_state) == 1) ||
        (self->more != NULL && self->more != Py_None)) {
        extra = PyObject_CallMethodNoArgs((PyObject *)self, str_uncommon);
        if (extra == NULL) {
            goto done;
        }
        if (!PyBytes_Check(extra)) {
            PyErr_SetString(PyExc_TypeError, "_uncommon() must return bytes");
            goto done;
        }
    }
    encoded = encode_span((const unsigned char *)PyBytes_AS_STRING(self->ids),
                          (size_t)PyBytes_GET_SIZE(self->ids),
                          (const unsigned char *)PyBytes_AS_STRING(self->span_id), self->start,
                          end, self->head, attr, extra);
    if (encoded == NULL) {
        goto done;
    }
    rc = recorder_put((Recorder *)self->recorder, encoded);
    Py_DECREF(encoded);
done:
    Py_XDECREF(attr);
    Py_XDECREF(extra);
    return rc;
}

static PyObject *
SpanCore_exit(SpanCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
        return NULL;
    }
    if (self->token != NULL) {
        PyObject *token = self->token;
        self->token = NULL;
        if (PyContextVar_Reset(context_var, token) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                Py_DECREF(token);
                return NULL;
            }
            /* Entered in another asyncio task: that context is gone anyway. */
            PyErr_Clear();
        }
        Py_DECREF(token);
    }
    PyObject *exc = args[1];
    /* CancelledError, KeyboardInterrupt, GeneratorExit are not failures. */
    if (exc != Py_None && !self->failed && PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception)) {
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, str_error, exc);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    if (span_end(self, now_ns()) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
SpanCore_end(SpanCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *end_time = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "end_time") != 0)) {
        PyErr_SetString(PyExc_TypeError, "end() takes one optional argument, end_time");
        return NULL;
    }
    if (nargs + nkw == 1) {
        end_time = args[0];
    }
    int64_t end;
    if (end_time == Py_None) {
        end = now_ns();
    }
    else {
        end = PyLong_AsLongLong(end_time);
        if (end == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (span_end(self, end) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef SpanCore_methods[] = {
    {"__enter__", (PyCFunction)SpanCore_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))SpanCore_exit, METH_FASTCALL, NULL},
    {"end", (PyCFunction)(void (*)(void))SpanCore_end, METH_FASTCALL | METH_KEYWORDS,
     "End the span: encode it and queue it for export (once)."},
    {NULL},
};

static PyMemberDef SpanCore_members[] = {
    {"_recorder", T_OBJECT, offsetof(SpanCore, recorder), READONLY, NULL},
    {"_ids", T_OBJECT, offsetof(SpanCore, ids), READONLY, NULL},
    {"span_id", T_OBJECT, offsetof(SpanCore, span_id), READONLY, NULL},
    {"trace_state", T_OBJECT, offsetof(SpanCore, trace_state), READONLY, NULL},
    {"_head", T_OBJECT, offsetof(SpanCore, head), READONLY, NULL},
    {"_msg_id", T_OBJECT, offsetof(SpanCore, msg_id), READONLY, NULL},
    {"_more", T_OBJECT, offsetof(SpanCore, more), 0, NULL},
    {"_span_context", T_OBJECT, offsetof(SpanCore, span_context), 0, NULL},
    {"_start", T_LONGLONG, offsetof(SpanCore, start), READONLY, NULL},
    {"_attach", T_BOOL, offsetof(SpanCore, attach), 0, NULL},
    {"_ended", T_BOOL, offsetof(SpanCore, ended), 0, NULL},
    {"_failed", T_BOOL, offsetof(SpanCore, failed), 0, NULL},
    {NULL},
};

static PyTypeObject SpanCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "actormesh.observability._speedups.SpanCore",
    .tp_basicsize = sizeof(SpanCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The recorded part of an actormesh span.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SpanCore_init,
    .tp_dealloc = (destructor)SpanCore_dealloc,
    .tp_traverse = (traverseproc)SpanCore_traverse,
    .tp_clear = (inquiry)SpanCore_clear,
    .tp_methods = SpanCore_methods,
    .tp_members = SpanCore_members,
};

/* -- the tracer's hot paths --------------------------------------------------------- */

/* A header's value, borrowed, or NULL (absent, or not a str). */
static PyObject *
header(PyObject *headers, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(headers, name);
    return value != NULL && PyUnicode_Check(value) ? value : NULL;
}

/* The arguments of `consumer`, `producer` (`with_cls`: a SpanCore subclass
 * first) and `sent`: then a Recorder, the headers dict and the encoded head. */
static int
check_args(const char *name, PyObject *const *args, Py_ssize_t nargs, int with_cls)
{
    if (!ready()) {
        return -1;
    }
    Py_ssize_t first = with_cls ? 1 : 0;
    if (nargs != first + 3 ||
        (with_cls && !(PyType_Check(args[0]) &&
                       PyType_IsSubtype((PyTypeObject *)args[0], &SpanCore_Type))) ||
        !PyObject_TypeCheck(args[first], &Recorder_Type) || !PyDict_Check(args[first + 1]) ||
        !PyBytes_Check(args[first + 2])) {
        PyErr_Format(PyExc_TypeError,
                     "%s(%srecorder: Recorder, headers: dict, head: bytes)", name,
                     with_cls ? "cls: type[SpanCore], " : "");
        return -1;
    }
    return 0;
}

/* A root's trace id field in `ids` (ROOT_IDS bytes); -1 on error, else whether
 * the recorder's sampler keeps it. */
static int
root_ids(Recorder *recorder, unsigned char *ids)
{
    if (random_id(ids + 2, 16) < 0) {
        return -1;
    }
    ids[0] = TRACE_TAG0;
    ids[1] = 0x10;
    return recorder->always || low64(ids + 2) < recorder->bound;
}

/* A started span of `cls`: recorded by `recorder` (a Recorder, or None when not
 * sampled), with these ids and fields; NULL with an error set. */
static PyObject *
new_span(PyObject *cls, PyObject *recorder, const unsigned char *ids, size_t ids_len,
         const unsigned char *span_id, PyObject *trace_state, PyObject *head, PyObject *msg_id,
         char attach)
{
    SpanCore *span = span_alloc((PyTypeObject *)cls);
    if (span == NULL) {
        return NULL;
    }
    span->recorder = Py_NewRef(recorder);
    span->ids = PyBytes_FromStringAndSize((const char *)ids, (Py_ssize_t)ids_len);
    span->span_id = PyBytes_FromStringAndSize((const char *)span_id, 8);
    span->trace_state = Py_NewRef(trace_state);
    span->head = Py_NewRef(head);
    span->msg_id = Py_NewRef(msg_id);
    span->attach = attach;
    if (span->ids == NULL || span->span_id == NULL) {
        Py_DECREF(span);
        return NULL;
    }
    span->start = now_ns();
    return (PyObject *)span;
}

/* consumer(cls, recorder, headers, head) -> span
 *
 * The consumer span of a message with these headers, started, to be entered
 * (it then is the current span), sampled as the recorder's sampler says. `head`
 * is the encoded name, kind and fixed attributes. */
static PyObject *
consumer(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("consumer", args, nargs, 1) < 0) {
        return NULL;
    }
    PyObject *headers = args[2];
    Recorder *recorder = (Recorder *)args[1];
    uint64_t bound = recorder->bound;
    int always = recorder->always;
    int parent_based = recorder->parent_based;
    unsigned char ids[CHILD_IDS];
    size_t ids_len = ROOT_IDS;
    int sampled = -1;
    PyObject *trace_state = Py_None;
    PyObject *raw = header(headers, str_traceparent);
    if (raw == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (raw != NULL) {
        Py_ssize_t n;
        const char *s = PyUnicode_IS_ASCII(raw) ? PyUnicode_AsUTF8AndSize(raw, &n) : NULL;
        if (s != NULL && n == 55 && s[0] == '0' && s[1] == '0' && s[2] == '-' && s[35] == '-' &&
            s[52] == '-' && unhex_id(s + 3, ids + 2, 16) == 0 &&
            unhex_id(s + 36, ids + 20, 8) == 0 && hex_value((unsigned char)s[53]) >= 0 &&
            hex_value((unsigned char)s[54]) >= 0) {
            ids_len = CHILD_IDS;
            sampled = hex_value((unsigned char)s[54]) & 1;
        }
        else if (!(s != NULL && n == 55 && s[0] == '0' && s[1] == '0')) {
            /* Another version, or not ASCII: the Python parser decides. */
            PyObject *parsed = PyObject_CallOneArg(parse_fallback, raw);
            if (parsed == NULL) {
                return NULL;
            }
            if (parsed != Py_None) {
                PyObject *fields = PyTuple_GET_ITEM(parsed, 0);
                if (!PyBytes_Check(fields) || PyBytes_GET_SIZE(fields) != CHILD_IDS) {
                    Py_DECREF(parsed);
                    PyErr_SetString(PyExc_ValueError, "bad parsed traceparent");
                    return NULL;
                }
                memcpy(ids, PyBytes_AS_STRING(fields), CHILD_IDS);
                ids_len = CHILD_IDS;
                sampled = PyObject_IsTrue(PyTuple_GET_ITEM(parsed, 1));
            }
            Py_DECREF(parsed);
        }
        if (ids_len == CHILD_IDS) {
            ids[20 - 2] = PARENT_TAG0;
            ids[20 - 1] = 0x08;
            PyObject *state = header(headers, str_tracestate);
            if (state == NULL && PyErr_Occurred()) {
                return NULL;
            }
            if (state != NULL && PyUnicode_GET_LENGTH(state)) {
                trace_state = state;
            }
            if (!parent_based) {
                sampled = always || low64(ids + 2) < bound;
            }
            ids[0] = TRACE_TAG0;
            ids[1] = 0x10;
        }
    }
    if (ids_len == ROOT_IDS && (sampled = root_ids(recorder, ids)) < 0) {
        return NULL;
    }
    unsigned char span_id[8];
    if (random_id(span_id, 8) < 0) {
        return NULL;
    }
    if (!sampled) {
        /* Nothing recorded; still current while the handler runs, so that its
         * sends continue the trace. */
        return new_span(args[0], Py_None, ids, ids_len, span_id, trace_state, empty_bytes,
                        Py_None, 1);
    }
    PyObject *msg_id = header(headers, str_msg_id);
    if (msg_id == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return new_span(args[0], args[1], ids, ids_len, span_id, trace_state, args[3],
                    msg_id ? msg_id : Py_None, 1);
}

/* A new root's ids and span id, its `traceparent` put in `headers`; -1 on error,
 * else whether it is sampled. */
static int
new_root(Recorder *recorder, PyObject *headers, unsigned char *ids, unsigned char *span_id)
{
    int sampled = root_ids(recorder, ids);
    if (sampled < 0 || random_id(span_id, 8) < 0) {
        return -1;
    }
    char text[55];
    memcpy(text, "00-", 3);
    put_hex(text + 3, ids + 2, 16);
    text[35] = '-';
    put_hex(text + 36, span_id, 8);
    memcpy(text + 52, sampled ? "-01" : "-00", 3);
    PyObject *value = PyUnicode_FromStringAndSize(text, 55);
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(headers, str_traceparent, value);
    Py_DECREF(value);
    return rc < 0 ? -1 : sampled;
}

/* producer(cls, recorder, headers, head) -> span | None
 *
 * A root producer span, started (it is not made current), its `traceparent` put
 * in `headers`; None when it is not sampled. */
static PyObject *
producer(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("producer", args, nargs, 1) < 0) {
        return NULL;
    }
    unsigned char ids[ROOT_IDS], span_id[8];
    int sampled = new_root((Recorder *)args[1], args[2], ids, span_id);
    if (sampled <= 0) {
        return sampled < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *msg_id = header(args[2], str_msg_id);
    if (msg_id == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return new_span(args[0], args[1], ids, ROOT_IDS, span_id, Py_None, args[3],
                    msg_id ? msg_id : Py_None, 0);
}

/* sent(recorder, headers, head) -> None
 *
 * A root producer span of no length for a message sent without waiting on it:
 * puts its `traceparent` in `headers` and, when sampled, queues it. */
static PyObject *
sent(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args("sent", args, nargs, 0) < 0) {
        return NULL;
    }
    unsigned char ids[ROOT_IDS], span_id[8];
    int sampled = new_root((Recorder *)args[0], args[1], ids, span_id);
    if (sampled <= 0) {
        return sampled < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *attr = NULL;
    PyObject *msg_id = header(args[1], str_msg_id);
    if (msg_id == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (msg_id != NULL && PyUnicode_GET_LENGTH(msg_id)) {
        attr = message_id_attribute(msg_id);
        if (attr == NULL) {
            return NULL;
        }
    }
    int64_t now = now_ns();
    PyObject *encoded = encode_span(ids, ROOT_IDS, span_id, now, now, args[2], attr, NULL);
    Py_XDECREF(attr);
    if (encoded == NULL) {
        return NULL;
    }
    int rc = recorder_put((Recorder *)args[0], encoded);
    Py_DECREF(encoded);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* init(context_var, context_type, span_key, parse_fallback, traceparent, tracestate,
 *      msg_id): the OpenTelemetry context's parts and the header names. */
static PyObject *
init(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyContextVar_CheckExact(args[0]) || !PyType_Check(args[1]) ||
        !PyType_IsSubtype((PyTypeObject *)args[1], &PyDict_Type) ||
        !PyCallable_Check(args[3]) || !PyUnicode_Check(args[4]) || !PyUnicode_Check(args[5]) ||
        !PyUnicode_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "init(context_var: ContextVar, context_type: type, span_key, "
                        "parse_fallback, traceparent: str, tracestate: str, msg_id: str)");
        return NULL;
    }
    Py_XSETREF(context_var, Py_NewRef(args[0]));
    Py_XSETREF(context_type, Py_NewRef(args[1]));
    Py_XSETREF(span_key, Py_NewRef(args[2]));
    Py_XSETREF(parse_fallback, Py_NewRef(args[3]));
    Py_XSETREF(str_traceparent, Py_NewRef(args[4]));
    Py_XSETREF(str_tracestate, Py_NewRef(args[5]));
    Py_XSETREF(str_msg_id, Py_NewRef(args[6]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"init", (PyCFunction)(void (*)(void))init, METH_FASTCALL, NULL},
    {"consumer", (PyCFunction)(void (*)(void))consumer, METH_FASTCALL, NULL},
    {"producer", (PyCFunction)(void (*)(void))producer, METH_FASTCALL, NULL},
    {"sent", (PyCFunction)(void (*)(void))sent, METH_FASTCALL, NULL},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "actormesh.observability._speedups",
    .m_doc = "MeshTracer's per-message work in C (see _native for the definition).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&Recorder_Type) < 0 || PyType_Ready(&SpanCore_Type) < 0) {
        return NULL;
    }
    empty_tuple = PyTuple_New(0);
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    str_error = PyUnicode_InternFromString("error");
    str_uncommon = PyUnicode_InternFromString("_uncommon");
    if (!empty_tuple || !empty_bytes || !str_error || !str_uncommon) {
        return NULL;
    }
    if (pthread_atfork(NULL, NULL, after_fork_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Recorder", (PyObject *)&Recorder_Type) < 0 ||
        PyModule_AddObjectRef(m, "SpanCore", (PyObject *)&SpanCore_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
