/*
 * body: buffers and rewrites HTTP bodies (ABI 0.2.1).
 *
 * Plugin configuration: the suffix to append to response bodies, verbatim (no trimming).
 * Empty configuration means the suffix "[body-plugin]".
 *
 * proxy_on_request_headers: removes request header "content-length" (the plugin may change
 *   body size), returns Continue.
 * proxy_on_request_body(ctx, size, eos):
 *   - eos == 0: returns Pause (StopIterationAndBuffer) so the host accumulates the body;
 *   - eos == 1: proxy_get_buffer_status(HTTP_REQUEST_BODY) for the size and flags,
 *     proxy_get_buffer_bytes(HTTP_REQUEST_BODY, 0, size), upper-cases ASCII a-z,
 *     proxy_set_buffer_bytes(HTTP_REQUEST_BODY, 0, size, upper) (replace all), also reads
 *     proxy_get_buffer_bytes(HTTP_REQUEST_BODY, size + 10, 5) (start past the end), and logs
 *     INFO "body: request size=<size arg> status_size=<status size> flags=<flags>
 *     past_end_status=<status> past_end_len=<len>"; returns Continue.
 *   The upstream therefore receives the request body upper-cased.
 * proxy_on_response_headers: removes response header "content-length"; Continue.
 * proxy_on_response_body(ctx, size, eos):
 *   - eos == 0: returns Continue (chunks pass through unchanged);
 *   - eos == 1: proxy_set_buffer_bytes(HTTP_RESPONSE_BODY, size, 0, suffix) (start at the end =
 *     append) and logs INFO "body: response size=<size> append_status=<status>"; Continue.
 *   The client therefore receives the original response body followed by the suffix.
 * Covers: proxy_get_buffer_bytes, proxy_get_buffer_status, proxy_set_buffer_bytes (replace and
 * append), buffers 0/1/7, proxy_on_request_body, proxy_on_response_body.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_ROOTS 16
static uint32_t suffix_roots[MAX_ROOTS];
static char *suffixes[MAX_ROOTS];

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  if (!config[0]) { free(config); config = strdup("[body-plugin]"); }
  for (int i = 0; i < MAX_ROOTS; i++) {
    if (suffix_roots[i] == root || suffix_roots[i] == 0) {
      free(suffixes[i]);
      suffix_roots[i] = root;
      suffixes[i] = config;
      return 1;
    }
  }
  free(config);
  return 0;
}

static const char *suffix_for(uint32_t ctx) {
  uint32_t root = pw_ctx_root(ctx);
  for (int i = 0; i < MAX_ROOTS; i++)
    if (suffix_roots[i] == root) return suffixes[i];
  return "[body-plugin]";
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_remove_header(PW_MAP_REQUEST_HEADERS, "content-length");
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  if (!eos) return PW_PAUSE;
  size_t status_size = 0;
  uint32_t flags = 0;
  proxy_get_buffer_status(PW_BUF_REQUEST_BODY, &status_size, &flags);
  pw_value body = pw_get_buffer(PW_BUF_REQUEST_BODY, 0, size);
  if (body.status == PW_OK) {
    for (size_t i = 0; i < body.len; i++)
      if (body.data[i] >= 'a' && body.data[i] <= 'z') body.data[i] = (char)(body.data[i] - 'a' + 'A');
    proxy_set_buffer_bytes(PW_BUF_REQUEST_BODY, 0, size, body.data, body.len);
  }
  pw_value past_end = pw_get_buffer(PW_BUF_REQUEST_BODY, (size_t)size + 10, 5);
  pw_logf(PW_LOG_INFO, "body: request size=%u status_size=%zu flags=%u past_end_status=%u past_end_len=%zu",
          size, status_size, flags, past_end.status, past_end.len);
  pw_value_free(&body);
  pw_value_free(&past_end);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_remove_header(PW_MAP_RESPONSE_HEADERS, "content-length");
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  if (!eos) return PW_CONTINUE;
  const char *suffix = suffix_for(ctx);
  pw_status s = proxy_set_buffer_bytes(PW_BUF_RESPONSE_BODY, size, 0, suffix, strlen(suffix));
  pw_logf(PW_LOG_INFO, "body: response size=%u append_status=%u", size, s);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) { pw_ctx_remove(ctx); }
