/* The canonical JSON text of checkpoints.digest, in one C pass over the document's UTF-8.
 *
 * Why C: the snapshot, the apply and verify hash every JSON document in its canonical form
 * (checkpoints/digest.py's docstring defines it). Through msgspec that is a decode into Python
 * objects, a sorted encode and a scan for the floats msgspec writes unlike the definition: about
 * 5 us a 500-byte ORM document, a fifth of a wide JSON table's load. Here the text is parsed once and
 * the canonical text written as it goes; only an object's members are reordered. No library writes
 * this form (RFC 8785 sorts keys by UTF-16 units and writes 1e+21; this definition writes every
 * number as its exact plain decimal).
 *
 * Narrow on purpose: anything out of the ordinary returns None and the caller takes the Python
 * paths, which hold the whole definition (the tests hold this one to them): text that is not JSON,
 * NaN/Infinity literals, a lone surrogate (in the str or as an escape), a raw control character in a
 * string, an integer of more than 18 digits, a float literal of more than 15 significant digits or
 * beyond 1e-300..1e300 in magnitude (its double's shortest repr needs strtod and Python's repr,
 * ~0.8 us a float, slower than msgspec's path for float-heavy arrays), unsorted objects nested so
 * that reordering would copy more than a budget linear in the input. So what it returns is always
 * the definition's text, and what it cannot do it leaves. The ``exact`` mode also takes the long
 * floats and integers: for documents nested deeper than the Python paths can read (no recursion
 * here: an explicit stack).
 *
 * The definition, as implemented here (json.loads's reading, then the canonical writing):
 *   - whitespace: only space, tab, LF, CR between tokens;
 *   - strings: escapes \" \\ \/ \b \f \n \r \t \uXXXX (pairs joined); written as json.dumps(
 *     ensure_ascii=False): \" \\ \n \r \t \b \f, other controls below U+0020 as \u00xx, the rest as
 *     UTF-8;
 *   - objects: keys compared as code points (UTF-8 byte order), the last of equal keys kept;
 *   - integers (no fraction, no exponent): their digits, -0 as 0;
 *   - other numbers: the float float(literal), written as the exact decimal of its shortest repr in
 *     plain notation, without trailing zeros or a trailing point, -0.0 as 0. A literal of at most 15
 *     significant digits in the normal range IS its float's shortest repr (see number()), so its
 *     own digits are written, with no arithmetic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INT_DIGITS 18

enum { OK = 0, FALLBACK = 1, NOMEM = -1 };

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return OK;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_Realloc(b->data, (size_t)cap);
    if (p == NULL) return NOMEM;
    b->data = p;
    b->cap = cap;
    return OK;
}

static int put(Buf *b, const char *s, Py_ssize_t n) {
    if (reserve(b, n)) return NOMEM;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return OK;
}

static int putc_(Buf *b, char c) {
    if (reserve(b, 1)) return NOMEM;
    b->data[b->len++] = c;
    return OK;
}

typedef struct {
    Py_ssize_t key_off, key_len; /* the key's code points as UTF-8, in P.keys */
    Py_ssize_t text_off, text_len; /* "key":value as written, in P.out */
    Py_ssize_t idx;
    const char *key;
} Member;

typedef struct {
    unsigned char kind; /* '{' or '[' */
    int sorted;         /* an object's keys so far in order, none repeated */
    Py_ssize_t start;   /* its text after the opening brace, in P.out */
    Py_ssize_t base, key_base, i, k; /* its members in P.mem and keys in P.keys; the current one */
} Frame;

typedef struct {
    const unsigned char *p, *end;
    Buf out, keys, scratch;
    Member *mem;
    Py_ssize_t mem_len, mem_cap;
    Py_ssize_t moved, budget; /* bytes copied by reorderings, and the most allowed (linear in the input) */
    Frame *stack; /* the open objects and arrays: in ``shallow`` up to its size, else on the heap */
    Py_ssize_t depth, stack_cap;
    Frame shallow[32];
    int exact; /* every number, whatever its digits (strtod and Python's repr for the floats) */
} P;

static void skip_ws(P *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) s->p++;
}

static int hex4(const unsigned char *q, unsigned int *cp) {
    unsigned int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = q[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return FALLBACK;
    }
    *cp = v;
    return OK;
}

static int utf8(Buf *b, unsigned int cp) {
    char t[4];
    Py_ssize_t n;
    if (cp < 0x80) { t[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | (cp >> 6)); t[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12)); t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18)); t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return put(b, t, n);
}

/* A code point read from an escape, written as json.dumps(ensure_ascii=False) writes it. */
static int write_escaped(Buf *b, unsigned int cp) {
    static const char hexdigits[] = "0123456789abcdef";
    switch (cp) {
    case '"': return put(b, "\\\"", 2);
    case '\\': return put(b, "\\\\", 2);
    case '\n': return put(b, "\\n", 2);
    case '\r': return put(b, "\\r", 2);
    case '\t': return put(b, "\\t", 2);
    case '\b': return put(b, "\\b", 2);
    case '\f': return put(b, "\\f", 2);
    default:
        if (cp < 0x20) {
            char t[6] = {'\\', 'u', '0', '0', hexdigits[cp >> 4], hexdigits[cp & 0xF]};
            return put(b, t, 6);
        }
        return utf8(b, cp);
    }
}

/* A string at s->p (its opening quote), written canonically to out and, when raw is not NULL, its
 * code points as UTF-8 to raw (an object's key, for sorting). */
static int string(P *s, Buf *raw) {
    const unsigned char *p = s->p + 1, *end = s->end;
    if (putc_(&s->out, '"')) return NOMEM;
    for (;;) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\') p++;
        if (p > run) {
            if (put(&s->out, (const char *)run, p - run)) return NOMEM;
            if (raw && put(raw, (const char *)run, p - run)) return NOMEM;
        }
        if (p >= end || *p < 0x20) return FALLBACK; /* unterminated, or a raw control (json.loads refuses) */
        if (*p == '"') break;
        /* a backslash */
        if (p + 1 >= end) return FALLBACK;
        unsigned int cp;
        switch (p[1]) {
        case '"': cp = '"'; p += 2; break;
        case '\\': cp = '\\'; p += 2; break;
        case '/': cp = '/'; p += 2; break;
        case 'b': cp = '\b'; p += 2; break;
        case 'f': cp = '\f'; p += 2; break;
        case 'n': cp = '\n'; p += 2; break;
        case 'r': cp = '\r'; p += 2; break;
        case 't': cp = '\t'; p += 2; break;
        case 'u':
            if (end - p < 6 || hex4(p + 2, &cp)) return FALLBACK;
            p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return FALLBACK; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned int low;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low)) return FALLBACK;
                if (low < 0xDC00 || low > 0xDFFF) return FALLBACK; /* a lone high surrogate */
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
            break;
        default: return FALLBACK;
        }
        if (write_escaped(&s->out, cp)) return NOMEM;
        if (raw && utf8(raw, cp)) return NOMEM;
    }
    s->p = p + 1;
    return putc_(&s->out, '"');
}

/* A decimal literal (``[-]digits[.digits][(e|E)[+-]digits]``: a JSON number or Python's repr of a
 * double) → its exact value in plain notation, without trailing zeros or a trailing point, zero as 0.
 * ``sig``: set to its count of significant digits, ``point``: to the point's place after them (so the
 * value is 0.<digits> x 10^point); the caller reads them to know whether the literal spells its
 * double's shortest repr. Writes nothing when ``b`` is NULL. */
static int plain(Buf *b, const char *r, Py_ssize_t len, Py_ssize_t *sig, long *point) {
    const char *end = r + len;
    int neg = (r < end && *r == '-');
    if (neg) r++;
    const char *d = NULL, *last = NULL; /* first and last nonzero digit */
    long pos = 0; /* the point's place, counted from the first nonzero digit */
    int seen_point = 0;
    const char *q = r;
    for (; q < end && *q != 'e' && *q != 'E'; q++) {
        if (*q == '.') { seen_point = 1; continue; }
        if (*q != '0' && d == NULL) d = q;
        if (*q != '0') last = q;
        if (d != NULL && !seen_point) pos++;
        if (d == NULL && seen_point) pos--;
    }
    long exp10 = 0;
    if (q < end) {
        errno = 0;
        exp10 = strtol(q + 1, NULL, 10);
        if (errno || exp10 > 100000 || exp10 < -100000) return FALLBACK;
    }
    if (d == NULL) { /* zero, -0.0 included */
        *sig = 0;
        *point = 0;
        return b ? putc_(b, '0') : OK;
    }
    pos += exp10;
    /* the digits from d to last, skipping a point between them */
    Py_ssize_t n = 0;
    for (q = d; q <= last; q++) n += (*q != '.');
    *sig = n;
    *point = pos;
    if (b == NULL) return OK;
    if (neg && putc_(b, '-')) return NOMEM;
    if (reserve(b, n + (pos < 0 ? -pos : 0) + (pos > n ? pos - n : 0) + 2)) return NOMEM;
    char *w = b->data + b->len;
    if (pos <= 0) {
        *w++ = '0';
        *w++ = '.';
        memset(w, '0', (size_t)(-pos));
        w += -pos;
    }
    Py_ssize_t written = 0;
    for (q = d; q <= last; q++) {
        if (*q == '.') continue;
        if (pos > 0 && written == pos) *w++ = '.';
        *w++ = *q;
        written++;
    }
    if (pos > n) {
        memset(w, '0', (size_t)(pos - n));
        w += pos - n;
    }
    b->len = w - b->data;
    return OK;
}

/* A float literal through its double: Python's float() (correctly rounded), then the exact decimal
 * of its shortest repr; an overflow is the float Infinity, as json.loads reads it. */
static int float_repr(P *s, const unsigned char *start, Py_ssize_t n) {
    char small[512], *literal = small;
    if (n >= (Py_ssize_t)sizeof(small) && (literal = PyMem_Malloc((size_t)n + 1)) == NULL) return NOMEM;
    memcpy(literal, start, (size_t)n);
    literal[n] = '\0';
    char *endp;
    double x = PyOS_string_to_double(literal, &endp, NULL); /* NULL: an overflow gives +-HUGE_VAL */
    int rc = OK;
    if (x == -1.0 && PyErr_Occurred()) {
        rc = PyErr_ExceptionMatches(PyExc_MemoryError) ? NOMEM : FALLBACK;
        if (rc == FALLBACK) PyErr_Clear(); /* a JSON number is always a float literal: not expected */
    } else if (endp != literal + n) {
        rc = FALLBACK;
    }
    if (literal != small) PyMem_Free(literal);
    if (rc) return rc;
    if (isinf(x)) return x > 0 ? put(&s->out, "Infinity", 8) : put(&s->out, "-Infinity", 9);
    char *r = PyOS_double_to_string(x, 'r', 0, 0, NULL);
    if (r == NULL) return NOMEM;
    Py_ssize_t sig;
    long point;
    rc = plain(&s->out, r, (Py_ssize_t)strlen(r), &sig, &point);
    PyMem_Free(r);
    return rc;
}

static int number(P *s) {
    const unsigned char *start = s->p, *p = s->p, *end = s->end;
    if (p < end && *p == '-') p++;
    if (p >= end) return FALLBACK;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return FALLBACK;
    const unsigned char *int_end = p;
    int is_float = 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return FALLBACK;
        while (p < end && *p >= '0' && *p <= '9') p++;
        is_float = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return FALLBACK;
        while (p < end && *p >= '0' && *p <= '9') p++;
        is_float = 1;
    }
    s->p = p;
    if (!is_float) {
        Py_ssize_t n = int_end - start;
        if (n - (*start == '-') > MAX_INT_DIGITS && !s->exact) return FALLBACK;
        if (n == 2 && start[0] == '-' && start[1] == '0') return putc_(&s->out, '0');
        return put(&s->out, (const char *)start, n);
    }
    Py_ssize_t n = p - start, sig;
    long point;
    int rc = plain(NULL, (const char *)start, n, &sig, &point);
    if (rc) return rc;
    /* A literal of at most 15 significant digits (DBL_DIG) in the normal range spells its double's
     * shortest repr: decimal -> double -> 15 digits gives the literal back, so no shorter string
     * reaches that double, nor another one as short. Its exact value is then the canonical text,
     * with no arithmetic (strtod and a repr cost ~0.2 us a float). */
    if (sig <= 15 && point > -300 && point < 300) return plain(&s->out, (const char *)start, n, &sig, &point);
    /* Otherwise the literal's double and its shortest repr are needed: ~0.8 us a float through
     * strtod and Python's repr, slower than msgspec's whole document path for float-heavy arrays
     * (embeddings, computed doubles with 16-17 digits), which the caller takes first; the exact
     * mode (documents too deep for those paths) does it here. */
    if (!s->exact) return FALLBACK;
    return float_repr(s, start, n);
}

static int literal(P *s, const char *word, Py_ssize_t n) {
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0) return FALLBACK;
    s->p += n;
    return put(&s->out, word, n);
}

static int by_key(const void *a, const void *b) {
    const Member *x = a, *y = b;
    Py_ssize_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, (size_t)n);
    if (c) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static int key_after(P *s, Py_ssize_t prev, Py_ssize_t cur) {
    const Member *x = &s->mem[prev], *y = &s->mem[cur];
    const char *k = s->keys.data;
    Py_ssize_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(k + x->key_off, k + y->key_off, (size_t)n);
    return c < 0 || (c == 0 && x->key_len < y->key_len);
}

/* Each unsorted object's members, sorted by key (the last of equal keys kept), written again. */
static int reorder(P *s, const Frame *f) {
    Py_ssize_t count = s->mem_len - f->base;
    /* each unsorted level copies its whole text, nested levels included: depth x size without a
     * bound ({"b":{"b":...BIG...,"a":1},"a":1}: 1000 levels around 50 MB took 9 s) */
    s->moved += s->out.len - f->start;
    if (s->moved > s->budget) return FALLBACK;
    Member *ms = s->mem + f->base;
    for (Py_ssize_t i = 0; i < count; i++) ms[i].key = s->keys.data + ms[i].key_off;
    if (count <= 32) { /* insertion sort: no allocation (glibc's qsort mallocs a merge buffer) */
        for (Py_ssize_t i = 1; i < count; i++) {
            Member m = ms[i];
            Py_ssize_t j = i;
            for (; j > 0 && by_key(&ms[j - 1], &m) > 0; j--) ms[j] = ms[j - 1];
            ms[j] = m;
        }
    } else {
        qsort(ms, (size_t)count, sizeof(Member), by_key);
    }
    s->scratch.len = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i + 1 < count && ms[i].key_len == ms[i + 1].key_len &&
            memcmp(ms[i].key, ms[i + 1].key, (size_t)ms[i].key_len) == 0)
            continue; /* a later member has the same key */
        if (s->scratch.len && putc_(&s->scratch, ',')) return NOMEM;
        if (put(&s->scratch, s->out.data + ms[i].text_off, ms[i].text_len)) return NOMEM;
    }
    s->out.len = f->start;
    return put(&s->out, s->scratch.data, s->scratch.len);
}

/* An object's member up to its value: its key (written, and kept raw for sorting) and the colon. */
static int open_member(P *s, Frame *f) {
    int rc;
    if (s->p >= s->end || *s->p != '"') return FALLBACK;
    if (f->i > 0 && putc_(&s->out, ',')) return NOMEM;
    if (s->mem_len == s->mem_cap) {
        Py_ssize_t cap = s->mem_cap ? s->mem_cap * 2 : 64;
        Member *m = PyMem_Realloc(s->mem, (size_t)cap * sizeof(Member));
        if (m == NULL) return NOMEM;
        s->mem = m;
        s->mem_cap = cap;
    }
    f->k = s->mem_len++; /* this member's slot, taken before a nested object pushes its own */
    Member *m = &s->mem[f->k];
    m->idx = f->i;
    m->key_off = s->keys.len;
    m->text_off = s->out.len;
    if ((rc = string(s, &s->keys))) return rc;
    m->key_len = s->keys.len - m->key_off;
    skip_ws(s);
    if (s->p >= s->end || *s->p != ':') return FALLBACK;
    s->p++;
    return putc_(&s->out, ':');
}

/* An object's member after its value (nested objects may have moved s->mem: it is indexed again). */
static void close_member(P *s, Frame *f) {
    Member *m = &s->mem[f->k];
    m->text_len = s->out.len - m->text_off;
    if (f->i > 0 && f->sorted && !key_after(s, f->k - 1, f->k)) f->sorted = 0;
}

static int push(P *s, unsigned char kind) {
    if (s->depth == s->stack_cap) {
        Py_ssize_t cap = s->stack_cap * 2;
        Frame *st = PyMem_Malloc((size_t)cap * sizeof(Frame));
        if (st == NULL) return NOMEM;
        memcpy(st, s->stack, (size_t)s->depth * sizeof(Frame));
        if (s->stack != s->shallow) PyMem_Free(s->stack);
        s->stack = st;
        s->stack_cap = cap;
    }
    s->p++;
    /* keys.data never NULL: memcmp and pointer arithmetic on empty keys ({"":1,"":2}) stay defined */
    if (putc_(&s->out, (char)kind) || reserve(&s->keys, 1)) return NOMEM;
    Frame *f = &s->stack[s->depth++];
    f->kind = kind;
    f->sorted = 1;
    f->start = s->out.len;
    f->base = s->mem_len;
    f->key_base = s->keys.len;
    f->i = 0;
    f->k = -1;
    return OK;
}

/* The whole document, with an explicit stack of the open objects and arrays instead of recursion: a
 * document nested 20,000 deep (PostgreSQL takes such) must not exhaust the C stack, nor Python's
 * recursion limit as the Python paths do. */
static int document(P *s) {
    int rc;
    for (;;) {
        /* a value starts here */
        skip_ws(s);
        if (s->p >= s->end) return FALLBACK;
        unsigned char c = *s->p;
        if (c == '{' || c == '[') {
            if ((rc = push(s, c))) return rc;
            Frame *f = &s->stack[s->depth - 1];
            skip_ws(s);
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) { /* empty */
                s->p++;
                if (putc_(&s->out, c == '{' ? '}' : ']')) return NOMEM;
                s->depth--;
            } else {
                if (c == '{' && (rc = open_member(s, f))) return rc;
                continue; /* its first value */
            }
        } else {
            switch (c) {
            case '"': rc = string(s, NULL); break;
            case 't': rc = literal(s, "true", 4); break;
            case 'f': rc = literal(s, "false", 5); break;
            case 'n': rc = literal(s, "null", 4); break;
            default: rc = number(s);
            }
            if (rc) return rc;
        }
        /* a value ended: go on in its container, closing each container it completes */
        for (;;) {
            if (s->depth == 0) return OK;
            Frame *f = &s->stack[s->depth - 1];
            if (f->kind == '{') close_member(s, f);
            skip_ws(s);
            if (s->p >= s->end) return FALLBACK;
            if (*s->p == ',') {
                s->p++;
                if (f->kind == '{') {
                    f->i++;
                    skip_ws(s);
                    if ((rc = open_member(s, f))) return rc;
                } else if (putc_(&s->out, ',')) {
                    return NOMEM;
                }
                break; /* the next value */
            }
            if (*s->p != (f->kind == '{' ? '}' : ']')) return FALLBACK;
            s->p++;
            if (f->kind == '{') {
                if (!f->sorted && (rc = reorder(s, f))) return rc;
                s->mem_len = f->base;
                s->keys.len = f->key_base;
            }
            if (putc_(&s->out, f->kind == '{' ? '}' : ']')) return NOMEM;
            s->depth--; /* the container was its parent's value */
        }
    }
}

static PyObject *run(PyObject *text, int exact) {
    if (!PyUnicode_Check(text)) Py_RETURN_NONE;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(text, &n);
    if (u == NULL) { /* a lone surrogate: the Python path */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    P s = {0};
    s.p = (const unsigned char *)u;
    s.end = s.p + n;
    s.budget = 8 * n + (64 << 20); /* never reached below ~64 KB, however deep */
    s.exact = exact;
    s.stack = s.shallow;
    s.stack_cap = (Py_ssize_t)(sizeof(s.shallow) / sizeof(s.shallow[0]));
    int rc = reserve(&s.out, n + 16);
    if (rc == OK) rc = document(&s);
    if (rc == OK) {
        skip_ws(&s);
        if (s.p != s.end) rc = FALLBACK;
    }
    PyObject *result = NULL;
    if (rc == OK) {
        result = PyUnicode_DecodeUTF8(s.out.data, s.out.len, "strict");
        if (result == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear(); /* cannot happen (valid input, escapes of scalar values only); if it did: Python */
            result = Py_NewRef(Py_None);
        }
    }
    else if (rc == FALLBACK) result = Py_NewRef(Py_None);
    else PyErr_NoMemory();
    PyMem_Free(s.out.data);
    PyMem_Free(s.keys.data);
    PyMem_Free(s.scratch.data);
    PyMem_Free(s.mem);
    if (s.stack != s.shallow) PyMem_Free(s.stack);
    return result;
}

static PyObject *canonical(PyObject *module, PyObject *text) {
    (void)module;
    return run(text, 0);
}

static PyObject *canonical_exact(PyObject *module, PyObject *text) {
    (void)module;
    return run(text, 1);
}

static PyMethodDef methods[] = {
    {"canonical", canonical, METH_O,
     "canonical(text) -> str | None: the canonical JSON text of a JSON document given as a str, or None "
     "when the document is not one this pass handles (then take checkpoints.digest's Python paths)."},
    {"canonical_exact", canonical_exact, METH_O,
     "canonical_exact(text) -> str | None: canonical() that also takes floats of more than 15 significant "
     "digits or beyond 1e-300..1e300 (through strtod and Python's repr, ~0.8 us each) and integers of any "
     "length: for documents nested deeper than the Python paths read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "checkpoints._canonical",
    "checkpoints.digest's canonical JSON text in C (see canonical.__doc__ and the C file's header).", -1, methods,
};

PyMODINIT_FUNC PyInit__canonical(void) { return PyModule_Create(&module); }
