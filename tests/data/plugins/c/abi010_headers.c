/*
 * abi010_headers: the ABI 0.1.0 surface (marker proxy_abi_version_0_1_0).
 *
 * Plugin configuration: any text, read in on_configure with proxy_get_configuration (0.1.0 has no
 * configuration buffers); stored verbatim. on_configure also sets a 10 ms tick and logs INFO
 * "abi010: configure config=<text> status=<status>"; returns true.
 *
 * proxy_on_request_headers(ctx, n)  (two parameters, as in 0.1.0):
 *   - looks up the absent request header "x-wasmesh-absent" (0.1.0 hosts answer OK with an
 *     empty value; remembers "status=<s> len=<len>");
 *   - adds request headers "x-abi010: <configuration>" and
 *     "x-clear-route-cache-status: <status of proxy_clear_route_cache()>";
 *   - if request header "x-pause" is present: queues the stream and returns Pause; the next
 *     on_tick of its root calls proxy_set_effective_context(stream), adds request header
 *     "x-resumed-by: continue_request" and calls proxy_continue_request();
 *   - otherwise Continue.
 * proxy_on_response_headers(ctx, n): adds response headers "x-abi010-num-headers: <n>" and
 *   "x-abi010-absent: status=<s> len=<len>"; if request header "x-pause-response" was present,
 *   queues the stream and returns Pause; the next tick adds response header
 *   "x-resumed-by: continue_response" and calls proxy_continue_response(); otherwise Continue.
 * proxy_on_request_body(ctx, size, eos): Continue (present to check 3-argument body callbacks
 *   under 0.1.0).
 * Covers: proxy_get_configuration, proxy_continue_request, proxy_continue_response,
 * proxy_clear_route_cache, 2-argument header callbacks, 0.1.0 missing-header semantics.
 */
#include "proxy_wasm.h"

PW_ABI_0_1_0

#define MAX_STREAMS 128

typedef struct {
  uint32_t ctx, root;
  int wait_request, wait_response, pause_response;
  char absent[48];
} stream_state;

static stream_state streams[MAX_STREAMS];
static char *configuration;

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *raw = NULL;
  size_t len = 0;
  pw_value config = pw_take(proxy_get_configuration(&raw, &len), raw, len);
  free(configuration);
  configuration = config.data ? config.data : strdup("");
  proxy_set_tick_period_milliseconds(10);
  pw_logf(PW_LOG_INFO, "abi010: configure config=%s status=%u", configuration, config.status);
  return 1;
}

static stream_state *stream_for(uint32_t ctx, int create) {
  for (int i = 0; i < MAX_STREAMS; i++)
    if (streams[i].ctx == ctx) return &streams[i];
  if (!create) return NULL;
  for (int i = 0; i < MAX_STREAMS; i++)
    if (streams[i].ctx == 0) { memset(&streams[i], 0, sizeof streams[i]); streams[i].ctx = ctx; return &streams[i]; }
  return NULL;
}

static int has_header(const char *name) {
  pw_value v = pw_get_header(PW_MAP_REQUEST_HEADERS, name);
  int present = v.status == PW_OK && v.len > 0;
  pw_value_free(&v);
  return present;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n) {
  stream_state *st = stream_for(ctx, 1);
  if (!st) return PW_CONTINUE;
  st->root = pw_ctx_root(ctx);
  pw_value absent = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-wasmesh-absent");
  snprintf(st->absent, sizeof st->absent, "status=%u len=%zu", absent.status, absent.len);
  pw_value_free(&absent);
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-abi010", configuration ? configuration : "");
  char number[16];
  snprintf(number, sizeof number, "%u", proxy_clear_route_cache());
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-clear-route-cache-status", number);
  st->pause_response = has_header("x-pause-response");
  if (has_header("x-pause")) {
    st->wait_request = 1;
    return PW_PAUSE;
  }
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) { return PW_CONTINUE; }

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n) {
  stream_state *st = stream_for(ctx, 0);
  char number[16];
  snprintf(number, sizeof number, "%u", n);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-abi010-num-headers", number);
  if (!st) return PW_CONTINUE;
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-abi010-absent", st->absent);
  if (st->pause_response) {
    st->wait_response = 1;
    return PW_PAUSE;
  }
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
  for (int i = 0; i < MAX_STREAMS; i++) {
    stream_state *st = &streams[i];
    if (!st->ctx || st->root != root) continue;
    if (st->wait_request) {
      st->wait_request = 0;
      proxy_set_effective_context(st->ctx);
      pw_add_header(PW_MAP_REQUEST_HEADERS, "x-resumed-by", "continue_request");
      proxy_continue_request();
    } else if (st->wait_response) {
      st->wait_response = 0;
      proxy_set_effective_context(st->ctx);
      pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-resumed-by", "continue_response");
      proxy_continue_response();
    }
  }
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  stream_state *st = stream_for(ctx, 0);
  if (st) memset(st, 0, sizeof *st);
  pw_ctx_remove(ctx);
}
