/*
 * stream_control: pause/resume and close of HTTP streams (ABI 0.2.1).
 *
 * Plugin configuration: tick period in ms (decimal); empty means 20. on_configure sets it with
 * proxy_set_tick_period_milliseconds and returns true.
 *
 * proxy_on_request_headers(ctx):
 *   - request header "x-close" present: proxy_close_stream(HTTP_REQUEST), logs INFO
 *     "stream_control: close_stream request status=<status>", returns Pause (the client sees a
 *     reset, not a response);
 *   - otherwise remembers whether "x-pause-response" and "x-close-response" are present, queues
 *     the stream for a request resume and returns Pause.
 * proxy_on_tick(root): for each stream of this root waiting for a resume (request or response),
 *   proxy_set_effective_context(stream); for a request resume adds request header
 *   "x-resumed-by: tick" and calls proxy_continue_stream(HTTP_REQUEST); for a response resume adds
 *   response header "x-resumed-by: tick" and calls proxy_continue_stream(HTTP_RESPONSE); logs
 *   INFO "stream_control: resumed <request|response> ctx=<ctx> status=<status>".
 * proxy_on_response_headers(ctx):
 *   - "x-close-response" was on the request: proxy_close_stream(HTTP_RESPONSE), logs INFO
 *     "stream_control: close_stream response status=<status>", returns Pause;
 *   - "x-pause-response" was on the request: queues a response resume and returns Pause;
 *   - otherwise Continue.
 * proxy_on_delete(ctx): forgets the stream (a pending resume for it is dropped).
 * Covers: proxy_continue_stream(HTTP_REQUEST/HTTP_RESPONSE), proxy_close_stream(HTTP_REQUEST/
 * HTTP_RESPONSE), proxy_set_effective_context from a tick, Pause on both header callbacks.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_STREAMS 256

typedef struct {
  uint32_t ctx;
  uint32_t root;
  int wait_request, wait_response;
  int pause_response, close_response;
} stream_state;

static stream_state streams[MAX_STREAMS];

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  unsigned long period = config[0] ? strtoul(config, NULL, 10) : 20;
  free(config);
  proxy_set_tick_period_milliseconds((uint32_t)period);
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

static int has_header(uint32_t map, const char *name) {
  pw_value v = pw_get_header(map, name);
  int present = v.status == PW_OK;
  pw_value_free(&v);
  return present;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  if (has_header(PW_MAP_REQUEST_HEADERS, "x-close")) {
    pw_logf(PW_LOG_INFO, "stream_control: close_stream request status=%u", proxy_close_stream(PW_STREAM_REQUEST));
    return PW_PAUSE;
  }
  stream_state *st = stream_for(ctx, 1);
  if (!st) return PW_CONTINUE;
  st->root = pw_ctx_root(ctx);
  st->pause_response = has_header(PW_MAP_REQUEST_HEADERS, "x-pause-response");
  st->close_response = has_header(PW_MAP_REQUEST_HEADERS, "x-close-response");
  st->wait_request = 1;
  return PW_PAUSE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 0);
  if (!st) return PW_CONTINUE;
  if (st->close_response) {
    pw_logf(PW_LOG_INFO, "stream_control: close_stream response status=%u", proxy_close_stream(PW_STREAM_RESPONSE));
    return PW_PAUSE;
  }
  if (st->pause_response) {
    st->wait_response = 1;
    return PW_PAUSE;
  }
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
  for (int i = 0; i < MAX_STREAMS; i++) {
    stream_state *st = &streams[i];
    if (!st->ctx || st->root != root || !(st->wait_request || st->wait_response)) continue;
    proxy_set_effective_context(st->ctx);
    int request = st->wait_request;
    uint32_t map = request ? PW_MAP_REQUEST_HEADERS : PW_MAP_RESPONSE_HEADERS;
    pw_add_header(map, "x-resumed-by", "tick");
    pw_status s = proxy_continue_stream(request ? PW_STREAM_REQUEST : PW_STREAM_RESPONSE);
    if (request) st->wait_request = 0;
    else st->wait_response = 0;
    pw_logf(PW_LOG_INFO, "stream_control: resumed %s ctx=%u status=%u", request ? "request" : "response", st->ctx, s);
  }
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  stream_state *st = stream_for(ctx, 0);
  if (st) memset(st, 0, sizeof *st);
  pw_ctx_remove(ctx);
}
