/* test_view.c - unit tests for lam_view: loading, validation errors, matching, rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lam_event.h"
#include "lam_json.h"
#include "lam_mem.h"
#include "lam_view.h"
#include "testlib.h"

static const char *data_path(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", lam_test_env("LAM_TEST_DATA", "tests/unit/data"), name);
    return buf;
}

static void test_shipped_views(void **state)
{
    (void)state;
    char err[256];
    lam_views_t *vs = lam_views_load(lam_test_env("LAM_VIEWS", "shared/views.json"), err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    assert_true(lam_views_count(vs) >= 7);
    const char *names[] = {"events_by_type", "page_views_by_url", "purchases_by_item", "revenue", "signups",
                           "distinct_users_per_day"};
    for (size_t i = 0; i < LAM_ARRAY_SIZE(names); i++)
        assert_non_null(lam_views_find(vs, names[i], strlen(names[i])));
    const lam_view_t *v = lam_views_find(vs, "purchases_by_item", 17);
    assert_int_equal(v->granularity, LAM_GRAN_HOUR);
    assert_int_equal(v->ngroup, 1);
    assert_string_equal(v->group_by[0].name, "item");
    assert_int_equal(v->nmetrics, 5);
    assert_int_equal(v->metrics[1].kind, LAM_METRIC_SUM);
    assert_string_equal(v->metrics[1].field.name, "price");
    assert_int_equal(lam_view_metric_index(v, "max:price", 9), 3);
    assert_int_equal(lam_view_metric_index(v, "avg:price", 9), -1);
    assert_ptr_equal(lam_views_get(vs, v->index), v);
    assert_null(lam_views_get(vs, 1000));
    assert_null(lam_views_find(vs, "nope", 4));
    lam_views_free(vs);
    lam_views_free(NULL);
}

static void test_all_keys_and_render(void **state)
{
    (void)state;
    char err[256], path[256];
    lam_views_t *vs = lam_views_load(data_path("views_all_keys.json", path, sizeof(path)), err, sizeof(err));
    if (!vs)
        fail_msg("%s", err);
    lam_buf_t a = LAM_BUF_INIT, b = LAM_BUF_INIT;
    lam_views_to_json(vs, &a);
    assert_string_equal(a.data,
                        "{\"views\":[{\"name\":\"v1\",\"description\":\"every key\",\"where\":{\"type\":[\"purchase\","
                        "\"refund\"],\"qty\":1,\"vip\":true,\"coupon\":null},\"group_by\":[\"item\",\"geo.cc\","
                        "\"user\",\"type\"],\"granularity\":\"minute\",\"metrics\":[\"count\",\"sum:price\","
                        "\"min:price\",\"max:price\",\"distinct:user\"]},{\"name\":\"v2\",\"where\":{},"
                        "\"group_by\":[],\"granularity\":\"day\",\"metrics\":[\"count\"]}]}");
    /* rendering parses back to the same definitions */
    lam_views_t *vs2 = lam_views_parse(a.data, a.len, "rendered", err, sizeof(err));
    assert_non_null(vs2);
    lam_views_to_json(vs2, &b);
    assert_string_equal(a.data, b.data);
    assert_int_equal(lam_views_total_metrics(vs), 6);
    assert_int_equal(lam_views_metric_base(vs, 1), 5);
    lam_views_free(vs2);
    lam_views_free(vs);
    lam_buf_free(&a);
    lam_buf_free(&b);
    assert_null(lam_views_load("/nonexistent/views.json", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/views.json: cannot open"));
}

static void expect_err(const char *doc, const char *want)
{
    char err[256];
    lam_views_t *vs = lam_views_parse(doc, strlen(doc), "views.json", err, sizeof(err));
    if (vs) {
        lam_views_free(vs);
        fail_msg("accepted: %s", doc);
    }
    if (strcmp(err, want) != 0)
        fail_msg("%s\n got: %s\nwant: %s", doc, err, want);
}

#define V(body) "{\"views\":[" body "]}"
#define OKV "{\"name\":\"ok\",\"granularity\":\"hour\",\"metrics\":[\"count\"]}"

static void test_errors(void **state)
{
    (void)state;
    expect_err("", "views.json: invalid JSON at byte 0: empty input");
    expect_err("[]", "views.json: must be a JSON object {\"views\": [...]}");
    expect_err("{}", "views.json: views: at least one view is required");
    expect_err("{\"views\":[]}", "views.json: views: at least one view is required");
    expect_err("{\"views\":{}}", "views.json: views: must be a list of view objects");
    expect_err("{\"view\":[]}", "views.json: unknown key \"view\"");
    expect_err("{\"views\":[" OKV "],\"views\":[]}", "views.json: duplicate key \"views\"");
    expect_err(V(OKV) " x", "views.json: invalid JSON at byte 67: trailing characters after the value");
    expect_err(V("1"), "views.json: view #1: must be an object");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"avg:price\"]}"),
               "views.json: view \"x\": unknown metric \"avg:price\" (count, sum:F, min:F, max:F, distinct:F)");
    /* the view is named even when the bad key comes before "name" */
    expect_err(V("{\"metrics\":[\"sum\"],\"name\":\"x\",\"granularity\":\"hour\"}"),
               "views.json: view \"x\": unknown metric \"sum\" (count, sum:F, min:F, max:F, distinct:F)");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"sum:\"]}"),
               "views.json: view \"x\": metrics: empty field name");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"sum:_p\"]}"),
               "views.json: view \"x\": metrics: field \"_p\" is reserved (starts with '_')");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[]}"),
               "views.json: view \"x\": metrics: must be a non-empty list");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":\"count\"}"),
               "views.json: view \"x\": metrics: must be a non-empty list");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[1]}"),
               "views.json: view \"x\": metrics: entries must be strings");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\",\"sum:p\",\"count\"]}"),
               "views.json: view \"x\": metrics: duplicate metric \"count\"");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\"}"), "views.json: view \"x\": metrics: required");
    expect_err(V("{\"name\":\"x\",\"metrics\":[\"count\"]}"),
               "views.json: view \"x\": granularity: required (minute, hour or day)");
    expect_err(V("{\"granularity\":\"hour\",\"metrics\":[\"count\"]}"), "views.json: view #1: name: required");
    expect_err(V(OKV ",{\"name\":\"Bad-Name\",\"granularity\":\"hour\",\"metrics\":[\"count\"]}"),
               "views.json: view #2: name: \"Bad-Name\" must match [a-z0-9_]{1,63}");
    expect_err(V("{\"name\":\"\",\"granularity\":\"hour\",\"metrics\":[\"count\"]}"),
               "views.json: view #1: name: \"\" must match [a-z0-9_]{1,63}");
    expect_err(V("{\"name\":\"a234567890123456789012345678901234567890123456789012345678901234\","
                 "\"granularity\":\"hour\",\"metrics\":[\"count\"]}"),
               "views.json: view #1: name: \"a234567890123456789012345678901234567890123456789012345678901234"
               "\" must match [a-z0-9_]{1,63}");
    expect_err(V("{\"name\":5,\"granularity\":\"hour\",\"metrics\":[\"count\"]}"),
               "views.json: view #1: name: must be a string");
    expect_err(V(OKV "," OKV), "views.json: view \"ok\": name: duplicate view name");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"week\",\"metrics\":[\"count\"]}"),
               "views.json: view \"x\": granularity: \"week\" is not minute, hour or day");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"colour\":1}"),
               "views.json: view \"x\": unknown key \"colour\"");
    expect_err(V("{\"name\":\"x\",\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"]}"),
               "views.json: view \"x\": duplicate key");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"group_by\":[\"a\",\"b\",\"c\","
                 "\"d\",\"e\"]}"),
               "views.json: view \"x\": group_by: at most 4 fields");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"group_by\":[\"a\",\"a\"]}"),
               "views.json: view \"x\": group_by: duplicate field \"a\"");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"group_by\":\"a\"}"),
               "views.json: view \"x\": group_by: must be a list of field names");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"group_by\":[\"\"]}"),
               "views.json: view \"x\": group_by: empty field name");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"group_by\":[\"a\\u0000\"]}"),
               "views.json: view \"x\": group_by: NUL byte in field name \"a\\u0000\"");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":[]}"),
               "views.json: view \"x\": where: must be an object");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"type\":[]}}"),
               "views.json: view \"x\": where.type: empty list matches nothing");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"type\":{}}}"),
               "views.json: view \"x\": where.type: values must be strings, numbers, booleans or null");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"t\":[\"a\",[1]]}}"),
               "views.json: view \"x\": where.t: values must be strings, numbers, booleans or null");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"a\":1,\"a\":2}}"),
               "views.json: view \"x\": where: duplicate field \"a\"");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"a\":1e999}}"),
               "views.json: view \"x\": where.a: number out of range");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"_a\":1}}"),
               "views.json: view \"x\": where: field \"_a\" is reserved (starts with '_')");
    expect_err(V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"]"),
               "views.json: view \"x\": invalid JSON at byte 62: expected ',' or '}'");
}

static int match(const lam_view_t *v, const char *ev_json)
{
    lam_event_t ev;
    char err[256];
    lam_event_init(&ev);
    if (lam_event_parse(&ev, ev_json, strlen(ev_json), 0, -1, err, sizeof(err)))
        fail_msg("%s: %s", ev_json, err);
    int m = lam_view_match(v, &ev);
    lam_event_free(&ev);
    return m;
}

static void test_match(void **state)
{
    (void)state;
    const char *doc = V("{\"name\":\"x\",\"granularity\":\"hour\",\"metrics\":[\"count\"],"
                        "\"where\":{\"type\":[\"purchase\",\"refund\"],\"qty\":1.0,\"vip\":true,\"coupon\":null}}");
    char err[256];
    lam_views_t *vs = lam_views_parse(doc, strlen(doc), "t", err, sizeof(err));
    assert_non_null(vs);
    const lam_view_t *v = lam_views_get(vs, 0);
    assert_true(match(v, "{\"type\":\"purchase\",\"qty\":1,\"vip\":true}"));
    assert_true(match(v, "{\"type\":\"refund\",\"qty\":1.00,\"vip\":true,\"coupon\":null}"));
    assert_true(match(v, "{\"type\":\"refund\",\"qty\":10e-1,\"vip\":true}"));
    assert_false(match(v, "{\"type\":\"page_view\",\"qty\":1,\"vip\":true}"));
    assert_false(match(v, "{\"type\":\"purchase\",\"qty\":\"1\",\"vip\":true}"));
    assert_false(match(v, "{\"type\":\"purchase\",\"qty\":2,\"vip\":true}"));
    assert_false(match(v, "{\"type\":\"purchase\",\"qty\":1,\"vip\":false}"));
    assert_false(match(v, "{\"type\":\"purchase\",\"qty\":1}"));
    assert_false(match(v, "{\"type\":\"purchase\",\"qty\":1,\"vip\":true,\"coupon\":\"x\"}"));
    assert_false(match(v, "{\"type\":\"purchas\",\"qty\":1,\"vip\":true}"));
    lam_views_free(vs);
    /* NUL bytes in where strings are compared exactly */
    doc = V("{\"name\":\"y\",\"granularity\":\"hour\",\"metrics\":[\"count\"],\"where\":{\"s\":\"a\\u0000b\"}}");
    vs = lam_views_parse(doc, strlen(doc), "t", err, sizeof(err));
    assert_non_null(vs);
    assert_true(match(lam_views_get(vs, 0), "{\"type\":\"t\",\"s\":\"a\\u0000b\"}"));
    assert_false(match(lam_views_get(vs, 0), "{\"type\":\"t\",\"s\":\"a\"}"));
    lam_views_free(vs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_views),
        cmocka_unit_test(test_all_keys_and_render),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
