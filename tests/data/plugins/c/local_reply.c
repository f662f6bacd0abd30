/*
 * local_reply: denies requests that carry "x-deny" (ABI 0.2.1).
 *
 * No configuration.
 * proxy_on_request_headers: if request header "x-deny" is present (any value), calls
 *   proxy_send_local_response(403, details "denied_by_wasm", body "access denied: <value>\n",
 *   headers [("x-denied-by", "local_reply"), ("content-type", "text/plain")], grpc_status -1),
 *   logs INFO "local_reply: denied status=<send status>", and returns Pause.
 *   Otherwise returns Continue and the request reaches the upstream unchanged.
 * proxy_on_response_headers: adds response header "x-local-reply-checked: 1"; Continue. Whether
 *   this callback also runs for the plugin's own 403 is host-specific (Envoy passes local replies
 *   through encoder filters): tests should assert it only on requests that were not denied.
 * Covers: proxy_send_local_response (with pairs headers, no gRPC status).
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_value deny = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-deny");
  if (deny.status != PW_OK) return PW_CONTINUE;
  char body[512];
  int body_len = snprintf(body, sizeof body, "access denied: %s\n", deny.data);
  if (body_len >= (int)sizeof body) body_len = sizeof body - 1;
  pw_pair pairs[2] = {pw_pair_of("x-denied-by", "local_reply"), pw_pair_of("content-type", "text/plain")};
  size_t blob_len = 0;
  char *blob = pw_pairs_encode(pairs, 2, &blob_len);
  const char *details = "denied_by_wasm";
  pw_status s = proxy_send_local_response(403, details, strlen(details), body, (size_t)body_len, blob, blob_len, -1);
  free(blob);
  pw_value_free(&deny);
  pw_logf(PW_LOG_INFO, "local_reply: denied status=%u", s);
  return PW_PAUSE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-local-reply-checked", "1");
  return PW_CONTINUE;
}
