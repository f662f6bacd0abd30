/*
 * metrics: counters, gauges and histograms (ABI 0.2.1).
 *
 * No configuration.
 * proxy_on_configure(root): proxy_define_metric for counter "wasmesh_test_requests_total",
 *   gauge "wasmesh_test_inflight", gauge "wasmesh_test_last_header_count", histogram
 *   "wasmesh_test_header_count"; and proxy_define_metric(type 3, "wasmesh_test_bad") whose
 *   status is remembered (BAD_ARGUMENT = 2 expected). Logs INFO "metrics: defined
 *   counter=<id> inflight=<id> last=<id> histogram=<id> bad_type_status=<status>"; returns
 *   true only when the four valid definitions returned OK.
 * proxy_on_request_headers(ctx, n): proxy_increment_metric(counter, +1),
 *   proxy_increment_metric(inflight, +1), proxy_record_metric(last_header_count, n),
 *   proxy_record_metric(histogram, n); Continue.
 * proxy_on_response_headers: proxy_get_metric on counter, inflight and last_header_count, and on
 *   the histogram (status only); adds response headers "x-counter: <counter value>",
 *   "x-inflight: <gauge value>", "x-last-header-count: <gauge value>",
 *   "x-histogram-get-status: <status>" (Envoy: BAD_ARGUMENT = 2),
 *   "x-bad-metric-type-status: <status from configure>",
 *   "x-unknown-metric-status: <status of proxy_get_metric(0x7ffffff0)>"; Continue.
 * proxy_on_log(ctx): proxy_increment_metric(inflight, -1), so after a completed request the
 *   inflight gauge goes back down.
 * Covers: proxy_define_metric, proxy_increment_metric, proxy_record_metric, proxy_get_metric,
 * proxy_on_log.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

static uint32_t counter_id, inflight_id, last_id, histogram_id;
static pw_status bad_type_status = PW_OK;

static uint32_t define(uint32_t type, const char *name, pw_status *status) {
  uint32_t id = 0;
  *status = proxy_define_metric(type, name, strlen(name), &id);
  return id;
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  pw_status s1, s2, s3, s4;
  counter_id = define(PW_METRIC_COUNTER, "wasmesh_test_requests_total", &s1);
  inflight_id = define(PW_METRIC_GAUGE, "wasmesh_test_inflight", &s2);
  last_id = define(PW_METRIC_GAUGE, "wasmesh_test_last_header_count", &s3);
  histogram_id = define(PW_METRIC_HISTOGRAM, "wasmesh_test_header_count", &s4);
  define(3, "wasmesh_test_bad", &bad_type_status);
  pw_logf(PW_LOG_INFO, "metrics: defined counter=%u inflight=%u last=%u histogram=%u bad_type_status=%u", counter_id,
          inflight_id, last_id, histogram_id, bad_type_status);
  return s1 == PW_OK && s2 == PW_OK && s3 == PW_OK && s4 == PW_OK;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  proxy_increment_metric(counter_id, 1);
  proxy_increment_metric(inflight_id, 1);
  proxy_record_metric(last_id, n);
  proxy_record_metric(histogram_id, n);
  return PW_CONTINUE;
}

static void add_number(const char *name, unsigned long long value) {
  char number[32];
  snprintf(number, sizeof number, "%llu", value);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, name, number);
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  uint64_t value = 0;
  proxy_get_metric(counter_id, &value);
  add_number("x-counter", value);
  value = 0;
  proxy_get_metric(inflight_id, &value);
  add_number("x-inflight", value);
  value = 0;
  proxy_get_metric(last_id, &value);
  add_number("x-last-header-count", value);
  add_number("x-histogram-get-status", proxy_get_metric(histogram_id, &value));
  add_number("x-bad-metric-type-status", bad_type_status);
  add_number("x-unknown-metric-status", proxy_get_metric(0x7ffffff0u, &value));
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_log) void on_log(uint32_t ctx) { proxy_increment_metric(inflight_id, -1); }
