/* lam_view.c - the views file: load, validate (DESIGN §2), match events, render definitions. */
#include "lam_view.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lam_json.h"
#include "lam_mem.h"

struct lam_views {
    lam_view_t *v;
    size_t n;
    size_t *metric_base;
    size_t total_metrics;
};

typedef struct pctx {
    lam_json_t j;
    const char *src;
    char *errstr;
    size_t errstr_size;
    const char *vname; /* current view's name when known */
    size_t vidx;
    int in_view;
} pctx_t;

__attribute__((format(printf, 2, 3))) static int perr(pctx_t *c, const char *fmt, ...)
{
    if (!c->errstr || !c->errstr_size)
        return -1;
    int n;
    if (c->in_view && c->vname)
        n = snprintf(c->errstr, c->errstr_size, "%s: view \"%s\": ", c->src, c->vname);
    else if (c->in_view)
        n = snprintf(c->errstr, c->errstr_size, "%s: view #%zu: ", c->src, c->vidx + 1);
    else
        n = snprintf(c->errstr, c->errstr_size, "%s: ", c->src);
    if (n >= 0 && (size_t)n < c->errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errstr + n, c->errstr_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static lam_json_tok_t next(pctx_t *c)
{
    lam_json_tok_t t = lam_json_next(&c->j);
    if (t == LAM_JSON_ERROR)
        perr(c, "%s", c->j.err);
    return t;
}

static char *dup_tok(const lam_json_t *j, size_t *len, int *nul)
{
    char *s = lam_malloc(j->tok_len + 1);
    *len = lam_json_decode(j->tok, j->tok_len, s, nul);
    s[*len] = '\0';
    return s;
}

static int tok_is(const lam_json_t *j, const char *s)
{
    size_t n = strlen(s);
    return !j->tok_escaped && j->tok_len == n && memcmp(j->tok, s, n) == 0;
}

static void fieldref_free(lam_fieldref_t *f)
{
    lam_free(f->name);
    f->name = NULL;
}

static int check_field(pctx_t *c, const char *what, const char *name, size_t len, int nul)
{
    char q[80];
    lam_json_quote_excerpt(q, sizeof(q), name, len);
    if (len == 0)
        return perr(c, "%s: empty field name", what);
    if (nul)
        return perr(c, "%s: NUL byte in field name %s", what, q);
    if (name[0] == '_')
        return perr(c, "%s: field %s is reserved (starts with '_')", what, q);
    return 0;
}

static int set_fieldref(pctx_t *c, const char *what, lam_fieldref_t *f, char *name, size_t len, int nul)
{
    if (check_field(c, what, name, len, nul)) {
        lam_free(name);
        return -1;
    }
    f->name = lam_realloc(name, len + 9); /* padded: lam_event_get_padded loads whole words */
    memset(f->name + len, 0, 9);
    f->len = len;
    f->hash = lam_event_name_hash(f->name, len);
    return 0;
}

/* Parse a scalar token into a where value. */
static int where_value(pctx_t *c, lam_json_tok_t t, const char *field, lam_where_value_t *wv)
{
    int nul;
    switch (t) {
    case LAM_JSON_STRING:
        wv->type = LAM_VAL_STRING;
        wv->val = dup_tok(&c->j, &wv->len, &nul);
        return 0;
    case LAM_JSON_NUMBER: {
        lam_json_num_t n;
        lam_json_num_parse(c->j.tok, c->j.tok_len, &n);
        if (!lam_json_num_in_range(&n))
            return perr(c, "where.%s: number out of range", field);
        wv->type = LAM_VAL_NUMBER;
        wv->val = lam_malloc(LAM_JSON_NUM_MAXLEN(&n) + 1);
        wv->len = lam_json_num_format(&n, wv->val);
        wv->val[wv->len] = '\0';
        return 0;
    }
    case LAM_JSON_TRUE:
    case LAM_JSON_FALSE:
    case LAM_JSON_NULL:
        wv->type = t == LAM_JSON_TRUE ? LAM_VAL_TRUE : t == LAM_JSON_FALSE ? LAM_VAL_FALSE : LAM_VAL_NULL;
        wv->val = lam_strdup(t == LAM_JSON_TRUE ? "true" : t == LAM_JSON_FALSE ? "false" : "null");
        wv->len = strlen(wv->val);
        return 0;
    case LAM_JSON_ERROR:
        return -1;
    default:
        return perr(c, "where.%s: values must be strings, numbers, booleans or null", field);
    }
}

static int parse_where(pctx_t *c, lam_view_t *v)
{
    lam_json_tok_t t = next(c);
    if (t != LAM_JSON_OBJECT)
        return t == LAM_JSON_ERROR ? -1 : perr(c, "where: must be an object");
    for (;;) {
        t = next(c);
        if (t == LAM_JSON_OBJECT_END)
            return 0;
        if (t != LAM_JSON_KEY)
            return -1;
        size_t len;
        int nul;
        char *name = dup_tok(&c->j, &len, &nul);
        v->where = lam_realloc(v->where, (v->nwhere + 1) * sizeof(lam_where_t));
        lam_where_t *w = &v->where[v->nwhere];
        memset(w, 0, sizeof(*w));
        if (set_fieldref(c, "where", &w->field, name, len, nul))
            return -1;
        v->nwhere++;
        for (size_t i = 0; i + 1 < v->nwhere; i++)
            if (v->where[i].field.len == len && memcmp(v->where[i].field.name, w->field.name, len) == 0)
                return perr(c, "where: duplicate field \"%s\"", w->field.name);
        t = next(c);
        if (t == LAM_JSON_ARRAY) {
            w->is_list = 1;
            for (;;) {
                t = next(c);
                if (t == LAM_JSON_ARRAY_END)
                    break;
                w->values = lam_realloc(w->values, (w->nvalues + 1) * sizeof(lam_where_value_t));
                if (where_value(c, t, w->field.name, &w->values[w->nvalues]))
                    return -1;
                w->nvalues++;
            }
            if (w->nvalues == 0)
                return perr(c, "where.%s: empty list matches nothing", w->field.name);
        } else {
            w->values = lam_malloc(sizeof(lam_where_value_t));
            if (where_value(c, t, w->field.name, &w->values[0]))
                return -1;
            w->nvalues = 1;
        }
    }
}

static int parse_group_by(pctx_t *c, lam_view_t *v)
{
    lam_json_tok_t t = next(c);
    if (t != LAM_JSON_ARRAY)
        return t == LAM_JSON_ERROR ? -1 : perr(c, "group_by: must be a list of field names");
    for (;;) {
        t = next(c);
        if (t == LAM_JSON_ARRAY_END)
            return 0;
        if (t != LAM_JSON_STRING)
            return t == LAM_JSON_ERROR ? -1 : perr(c, "group_by: must be a list of field names");
        if (v->ngroup >= LAM_VIEW_GROUP_MAX)
            return perr(c, "group_by: at most %d fields", LAM_VIEW_GROUP_MAX);
        size_t len;
        int nul;
        char *name = dup_tok(&c->j, &len, &nul);
        if (set_fieldref(c, "group_by", &v->group_by[v->ngroup], name, len, nul))
            return -1;
        name = v->group_by[v->ngroup++].name; /* set_fieldref may have moved it */
        for (size_t i = 0; i + 1 < v->ngroup; i++)
            if (v->group_by[i].len == len && memcmp(v->group_by[i].name, name, len) == 0)
                return perr(c, "group_by: duplicate field \"%s\"", name);
    }
}

const char *lam_metric_kind_name(lam_metric_kind_t k)
{
    static const char *const names[] = {"count", "sum", "min", "max", "distinct"};
    return (unsigned)k < 5 ? names[k] : "?";
}

static int parse_metrics(pctx_t *c, lam_view_t *v)
{
    lam_json_tok_t t = next(c);
    if (t != LAM_JSON_ARRAY)
        return t == LAM_JSON_ERROR ? -1 : perr(c, "metrics: must be a non-empty list");
    for (;;) {
        t = next(c);
        if (t == LAM_JSON_ARRAY_END)
            break;
        if (t != LAM_JSON_STRING)
            return t == LAM_JSON_ERROR ? -1 : perr(c, "metrics: entries must be strings");
        size_t len;
        int nul;
        char *text = dup_tok(&c->j, &len, &nul);
        v->metrics = lam_realloc(v->metrics, (v->nmetrics + 1) * sizeof(lam_metric_t));
        lam_metric_t *m = &v->metrics[v->nmetrics];
        memset(m, 0, sizeof(*m));
        m->text = text;
        v->nmetrics++;
        char q[96];
        lam_json_quote_excerpt(q, sizeof(q), text, len);
        if (len == 5 && memcmp(text, "count", 5) == 0) {
            m->kind = LAM_METRIC_COUNT;
        } else {
            const char *colon = memchr(text, ':', len);
            size_t kl = colon ? (size_t)(colon - text) : len;
            int kind = -1;
            for (int k = LAM_METRIC_SUM; k <= LAM_METRIC_DISTINCT; k++)
                if (strlen(lam_metric_kind_name(k)) == kl && memcmp(text, lam_metric_kind_name(k), kl) == 0)
                    kind = k;
            if (kind < 0 || !colon)
                return perr(c, "unknown metric %s (count, sum:F, min:F, max:F, distinct:F)", q);
            m->kind = (lam_metric_kind_t)kind;
            size_t fl = len - kl - 1;
            char *fname = lam_strndup(colon + 1, fl);
            if (set_fieldref(c, "metrics", &m->field, fname, fl, nul || memchr(colon + 1, 0, fl) != NULL))
                return -1;
        }
        for (size_t i = 0; i + 1 < v->nmetrics; i++)
            if (strlen(v->metrics[i].text) == len && memcmp(v->metrics[i].text, text, len) == 0)
                return perr(c, "metrics: duplicate metric %s", q);
    }
    if (v->nmetrics == 0)
        return perr(c, "metrics: must be a non-empty list");
    return 0;
}

static int valid_view_name(const char *s, size_t len)
{
    if (len < 1 || len > LAM_VIEW_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* Look ahead in the current view object for "name" so every error can name the view. */
static char *peek_name(pctx_t *c)
{
    lam_json_t save = c->j;
    char *name = NULL;
    for (;;) {
        lam_json_tok_t t = lam_json_next(&c->j);
        if (t != LAM_JSON_KEY)
            break;
        int is_name = tok_is(&c->j, "name");
        t = lam_json_next(&c->j);
        if (is_name && t == LAM_JSON_STRING && !name) {
            size_t len;
            int nul;
            name = dup_tok(&c->j, &len, &nul);
            if (!valid_view_name(name, len)) {
                lam_free(name);
                name = NULL;
            }
        }
        if (lam_json_skip(&c->j, t))
            break;
    }
    c->j = save;
    return name;
}

static void view_free_members(lam_view_t *v)
{
    lam_free(v->name);
    lam_free(v->description);
    for (size_t i = 0; i < v->nwhere; i++) {
        fieldref_free(&v->where[i].field);
        for (size_t k = 0; k < v->where[i].nvalues; k++)
            lam_free(v->where[i].values[k].val);
        lam_free(v->where[i].values);
    }
    lam_free(v->where);
    for (size_t i = 0; i < v->ngroup; i++)
        fieldref_free(&v->group_by[i]);
    for (size_t i = 0; i < v->nmetrics; i++) {
        lam_free(v->metrics[i].text);
        fieldref_free(&v->metrics[i].field);
    }
    lam_free(v->metrics);
    memset(v, 0, sizeof(*v));
}

static int parse_view(pctx_t *c, lam_view_t *v)
{
    enum { K_NAME = 1, K_DESC = 2, K_WHERE = 4, K_GROUP = 8, K_GRAN = 16, K_METRICS = 32 };
    unsigned seen = 0;
    char *pname = peek_name(c);
    c->vname = pname;
    int rc = -1;
    for (;;) {
        lam_json_tok_t t = next(c);
        if (t == LAM_JSON_OBJECT_END)
            break;
        if (t != LAM_JSON_KEY)
            goto out;
        unsigned k = tok_is(&c->j, "name") ? K_NAME : tok_is(&c->j, "description") ? K_DESC
                     : tok_is(&c->j, "where") ? K_WHERE : tok_is(&c->j, "group_by") ? K_GROUP
                     : tok_is(&c->j, "granularity") ? K_GRAN : tok_is(&c->j, "metrics") ? K_METRICS : 0;
        if (!k) {
            char q[80];
            lam_json_quote_excerpt(q, sizeof(q), c->j.tok, c->j.tok_len);
            perr(c, "unknown key %s", q);
            goto out;
        }
        if (seen & k) {
            perr(c, "duplicate key");
            goto out;
        }
        seen |= k;
        if (k == K_WHERE || k == K_GROUP || k == K_METRICS) {
            if ((k == K_WHERE ? parse_where(c, v) : k == K_GROUP ? parse_group_by(c, v) : parse_metrics(c, v)))
                goto out;
            continue;
        }
        t = next(c);
        const char *what = k == K_NAME ? "name" : k == K_DESC ? "description" : "granularity";
        if (t != LAM_JSON_STRING) {
            if (t != LAM_JSON_ERROR)
                perr(c, "%s: must be a string", what);
            goto out;
        }
        size_t len;
        int nul;
        char *s = dup_tok(&c->j, &len, &nul);
        if (k == K_NAME) {
            v->name = s;
            if (!valid_view_name(s, len)) {
                char q[96];
                lam_json_quote_excerpt(q, sizeof(q), s, len);
                perr(c, "name: %s must match [a-z0-9_]{1,63}", q);
                goto out;
            }
        } else if (k == K_DESC) {
            v->description = s;
        } else {
            lam_gran_t g;
            int ok = lam_gran_parse(s, len, &g) == 0 && g <= LAM_GRAN_DAY;
            char q[96];
            lam_json_quote_excerpt(q, sizeof(q), s, len);
            lam_free(s);
            if (!ok) {
                perr(c, "granularity: %s is not minute, hour or day", q);
                goto out;
            }
            v->granularity = g;
        }
    }
    if (!(seen & K_NAME))
        perr(c, "name: required");
    else if (!(seen & K_GRAN))
        perr(c, "granularity: required (minute, hour or day)");
    else if (!(seen & K_METRICS))
        perr(c, "metrics: required");
    else
        rc = 0;
out:
    c->vname = NULL;
    lam_free(pname);
    return rc;
}

void lam_views_free(lam_views_t *vs)
{
    if (!vs)
        return;
    for (size_t i = 0; i < vs->n; i++)
        view_free_members(&vs->v[i]);
    lam_free(vs->v);
    lam_free(vs->metric_base);
    lam_free(vs);
}

lam_views_t *lam_views_parse(const char *json, size_t len, const char *source_name, char *errstr,
                             size_t errstr_size)
{
    pctx_t c = {.src = source_name ? source_name : "views", .errstr = errstr, .errstr_size = errstr_size};
    lam_views_t *vs = lam_calloc(1, sizeof(*vs));
    int seen_views = 0;
    lam_json_init(&c.j, json, len, 0);
    lam_json_tok_t t = next(&c);
    if (t != LAM_JSON_OBJECT) {
        if (t != LAM_JSON_ERROR)
            perr(&c, "must be a JSON object {\"views\": [...]}");
        goto fail;
    }
    for (;;) {
        t = next(&c);
        if (t == LAM_JSON_OBJECT_END)
            break;
        if (t != LAM_JSON_KEY)
            goto fail;
        if (!tok_is(&c.j, "views")) {
            char q[80];
            lam_json_quote_excerpt(q, sizeof(q), c.j.tok, c.j.tok_len);
            perr(&c, "unknown key %s", q);
            goto fail;
        }
        if (seen_views++) {
            perr(&c, "duplicate key \"views\"");
            goto fail;
        }
        t = next(&c);
        if (t != LAM_JSON_ARRAY) {
            if (t != LAM_JSON_ERROR)
                perr(&c, "views: must be a list of view objects");
            goto fail;
        }
        for (;;) {
            t = next(&c);
            if (t == LAM_JSON_ARRAY_END)
                break;
            c.vidx = vs->n;
            c.in_view = 1;
            if (t != LAM_JSON_OBJECT) {
                if (t != LAM_JSON_ERROR)
                    perr(&c, "must be an object");
                goto fail;
            }
            vs->v = lam_realloc(vs->v, (vs->n + 1) * sizeof(lam_view_t));
            lam_view_t *v = &vs->v[vs->n++];
            memset(v, 0, sizeof(*v));
            v->index = vs->n - 1;
            if (parse_view(&c, v))
                goto fail;
            for (size_t i = 0; i + 1 < vs->n; i++)
                if (strcmp(vs->v[i].name, v->name) == 0) {
                    c.vname = v->name;
                    perr(&c, "name: duplicate view name");
                    goto fail;
                }
            c.in_view = 0;
        }
    }
    if (next(&c) != LAM_JSON_EOF)
        goto fail;
    if (!seen_views || vs->n == 0) {
        perr(&c, "views: at least one view is required");
        goto fail;
    }
    vs->metric_base = lam_malloc(vs->n * sizeof(size_t));
    for (size_t i = 0; i < vs->n; i++) {
        vs->metric_base[i] = vs->total_metrics;
        vs->total_metrics += vs->v[i].nmetrics;
    }
    return vs;
fail:
    lam_views_free(vs);
    return NULL;
}

lam_views_t *lam_views_load(const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "%s: cannot open: %m", path);
        return NULL;
    }
    lam_buf_t b = LAM_BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        lam_buf_append(&b, tmp, n);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "%s: read error", path);
        lam_buf_free(&b);
        return NULL;
    }
    lam_views_t *vs = lam_views_parse(b.data ? b.data : "", b.len, path, errstr, errstr_size);
    lam_buf_free(&b);
    return vs;
}

size_t lam_views_count(const lam_views_t *vs)
{
    return vs->n;
}

const lam_view_t *lam_views_get(const lam_views_t *vs, size_t i)
{
    return i < vs->n ? &vs->v[i] : NULL;
}

const lam_view_t *lam_views_find(const lam_views_t *vs, const char *name, size_t len)
{
    for (size_t i = 0; i < vs->n; i++)
        if (strlen(vs->v[i].name) == len && memcmp(vs->v[i].name, name, len) == 0)
            return &vs->v[i];
    return NULL;
}

size_t lam_views_total_metrics(const lam_views_t *vs)
{
    return vs->total_metrics;
}

size_t lam_views_metric_base(const lam_views_t *vs, size_t view_index)
{
    return view_index < vs->n ? vs->metric_base[view_index] : vs->total_metrics;
}

int lam_view_metric_index(const lam_view_t *v, const char *text, size_t len)
{
    for (size_t i = 0; i < v->nmetrics; i++)
        if (strlen(v->metrics[i].text) == len && memcmp(v->metrics[i].text, text, len) == 0)
            return (int)i;
    return -1;
}

int lam_view_match(const lam_view_t *v, const lam_event_t *ev)
{
    for (size_t i = 0; i < v->nwhere; i++)
        if (!lam_where_match(&v->where[i], lam_view_field(ev, &v->where[i].field)))
            return 0;
    return 1;
}

int lam_view_where_equal(const lam_view_t *a, const lam_view_t *b)
{
    if (a->nwhere != b->nwhere)
        return 0;
    for (size_t i = 0; i < a->nwhere; i++) {
        const lam_where_t *x = &a->where[i], *y = &b->where[i];
        if (x->field.len != y->field.len || memcmp(x->field.name, y->field.name, x->field.len) != 0 ||
            x->nvalues != y->nvalues)
            return 0;
        for (size_t k = 0; k < x->nvalues; k++)
            if (x->values[k].type != y->values[k].type || x->values[k].len != y->values[k].len ||
                memcmp(x->values[k].val, y->values[k].val, x->values[k].len) != 0)
                return 0;
    }
    return 1;
}

static void append_where_value(lam_buf_t *out, const lam_where_value_t *wv)
{
    if (wv->type == LAM_VAL_STRING)
        lam_json_append_string(out, wv->val, wv->len);
    else
        lam_buf_append(out, wv->val, wv->len);
}

void lam_view_to_json(const lam_view_t *v, lam_buf_t *out)
{
    lam_buf_append_str(out, "{\"name\":");
    lam_json_append_cstr(out, v->name);
    if (v->description) {
        lam_buf_append_str(out, ",\"description\":");
        lam_json_append_cstr(out, v->description);
    }
    lam_buf_append_str(out, ",\"where\":{");
    for (size_t i = 0; i < v->nwhere; i++) {
        const lam_where_t *w = &v->where[i];
        if (i)
            lam_buf_append_char(out, ',');
        lam_json_append_string(out, w->field.name, w->field.len);
        lam_buf_append_char(out, ':');
        if (w->is_list)
            lam_buf_append_char(out, '[');
        for (size_t k = 0; k < w->nvalues; k++) {
            if (k)
                lam_buf_append_char(out, ',');
            append_where_value(out, &w->values[k]);
        }
        if (w->is_list)
            lam_buf_append_char(out, ']');
    }
    lam_buf_append_str(out, "},\"group_by\":[");
    for (size_t i = 0; i < v->ngroup; i++) {
        if (i)
            lam_buf_append_char(out, ',');
        lam_json_append_string(out, v->group_by[i].name, v->group_by[i].len);
    }
    lam_buf_append_str(out, "],\"granularity\":");
    lam_json_append_cstr(out, lam_gran_name(v->granularity));
    lam_buf_append_str(out, ",\"metrics\":[");
    for (size_t i = 0; i < v->nmetrics; i++) {
        if (i)
            lam_buf_append_char(out, ',');
        lam_json_append_cstr(out, v->metrics[i].text);
    }
    lam_buf_append_str(out, "]}");
}

void lam_views_to_json(const lam_views_t *vs, lam_buf_t *out)
{
    lam_buf_append_str(out, "{\"views\":[");
    for (size_t i = 0; i < vs->n; i++) {
        if (i)
            lam_buf_append_char(out, ',');
        lam_view_to_json(&vs->v[i], out);
    }
    lam_buf_append_str(out, "]}");
}
