/*
 * abi020_headers: a simple plugin under the ABI 0.2.0 marker (proxy_abi_version_0_2_0).
 *
 * No configuration.
 * proxy_on_request_headers(ctx, n, eos): adds request header "x-abi: 0.2.0" and remembers n and
 *   eos; looks up absent header "x-wasmesh-absent" and remembers its status (0.2.x: NOT_FOUND);
 *   Continue.
 * proxy_on_response_headers(ctx, n, eos): adds response headers "x-abi: 0.2.0",
 *   "x-abi020-request: n=<request n> eos=<request eos>", "x-abi020-absent-status: <status>";
 *   Continue. (The request values are kept per VM, not per stream: send requests one at a time.)
 * Covers: 3-argument header callbacks under the 0.2.0 marker.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_0

static char request_info[64];
static pw_status absent_status;

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-abi", "0.2.0");
  snprintf(request_info, sizeof request_info, "n=%u eos=%u", n, eos);
  pw_value absent = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-wasmesh-absent");
  absent_status = absent.status;
  pw_value_free(&absent);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-abi", "0.2.0");
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-abi020-request", request_info);
  char number[16];
  snprintf(number, sizeof number, "%u", absent_status);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-abi020-absent-status", number);
  return PW_CONTINUE;
}
