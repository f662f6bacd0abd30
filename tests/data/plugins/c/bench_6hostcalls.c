/*
 * bench_6hostcalls: the benchmark filter (ABI 0.2.1).
 *
 * No configuration. proxy_on_configure defines counter "wasmesh_bench_requests" (one host call,
 * at configure time only) and returns true.
 * proxy_on_request_headers makes exactly six host calls, in this order, then returns Continue:
 *   1. proxy_get_header_map_value(HTTP_REQUEST_HEADERS, "x-bench-in")
 *   2. proxy_add_header_map_value(HTTP_REQUEST_HEADERS, "x-bench", "1")
 *   3. proxy_get_property("request" 0x00 "path")
 *   4. proxy_increment_metric(counter, 1)
 *   5. proxy_replace_header_map_value(HTTP_REQUEST_HEADERS, "x-bench-replaced", "yes")
 *   6. proxy_log(DEBUG, "bench")
 * (Calls 1 and 3 may re-enter the module's malloc to return data; that is not a host call.)
 * No other callback is exported. The upstream therefore sees "x-bench: 1" and
 * "x-bench-replaced: yes" added to every request.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

static uint32_t counter;

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  static const char NAME[] = "wasmesh_bench_requests";
  return proxy_define_metric(PW_METRIC_COUNTER, NAME, sizeof NAME - 1, &counter) == PW_OK;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  char *value = NULL;
  size_t len = 0;
  proxy_get_header_map_value(PW_MAP_REQUEST_HEADERS, "x-bench-in", 10, &value, &len);
  free(value);
  proxy_add_header_map_value(PW_MAP_REQUEST_HEADERS, "x-bench", 7, "1", 1);
  value = NULL;
  proxy_get_property("request\0path", 12, &value, &len);
  free(value);
  proxy_increment_metric(counter, 1);
  proxy_replace_header_map_value(PW_MAP_REQUEST_HEADERS, "x-bench-replaced", 16, "yes", 3);
  proxy_log(PW_LOG_DEBUG, "bench", 5);
  return PW_CONTINUE;
}
