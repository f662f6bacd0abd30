/*
 * buffer_all: buffers whole bodies in both directions (ABI 0.2.1).
 *
 * Used to exercise the host's buffer limit (Envoy: the listener's
 * per_connection_buffer_limit_bytes; over it a request is answered 413, a response whose
 * headers have not been sent yet 500).
 *
 * Plugin configuration: "hold-headers" makes both header callbacks return Pause unless eos
 *   (Envoy stops all iteration with watermark buffering then: the body callbacks do not run
 *   until the stream continues); anything else lets headers Continue.
 * proxy_on_request_headers / proxy_on_response_headers(ctx, n, eos): see the configuration;
 * proxy_on_request_body / proxy_on_response_body(ctx, size, eos): Pause
 *   (StopIterationAndBuffer) until eos; at eos logs INFO "buffer_all: request size=<size>"
 *   (or "response") and returns Continue.
 * Covers: Pause on headers followed by buffering, the buffer limit of the host.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_ROOTS 16
static uint32_t hold_roots[MAX_ROOTS];

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  if (!strcmp(config, "hold-headers")) {
    for (int i = 0; i < MAX_ROOTS; i++) {
      if (hold_roots[i] == root || hold_roots[i] == 0) { hold_roots[i] = root; break; }
    }
  }
  free(config);
  return 1;
}

static uint32_t headers_status(uint32_t ctx, uint32_t eos) {
  uint32_t root = pw_ctx_root(ctx);
  if (eos) return PW_CONTINUE;
  for (int i = 0; i < MAX_ROOTS; i++)
    if (hold_roots[i] == root) return PW_PAUSE;
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  return headers_status(ctx, eos);
}

static uint32_t body_status(const char *direction, uint32_t size, uint32_t eos) {
  if (!eos) return PW_PAUSE;
  pw_logf(PW_LOG_INFO, "buffer_all: %s size=%u", direction, size);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  return body_status("request", size, eos);
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  return headers_status(ctx, eos);
}

PW_EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  return body_status("response", size, eos);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) { pw_ctx_remove(ctx); }
