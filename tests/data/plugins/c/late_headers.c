/*
 * late_headers: touches header maps after their callback has returned (ABI 0.2.1), and logs
 * the status of every host call, so a test can compare what the host answers and what
 * reaches the wire once a header block has been forwarded.
 *
 * proxy_on_request_headers: reads the request's mode from header "x-mode". "pause" returns
 *   Pause and asks for a 20 ms tick; proxy_on_tick then, for each held stream,
 *   proxy_set_effective_context(stream), adds request header "x-held-add: tick" (the map is
 *   still open: it must reach the upstream), logs INFO "late_headers: tick held_add=<status>",
 *   resumes with proxy_continue_stream(HTTP_REQUEST), and finally stops the tick.
 *   Anything else returns Continue (the headers are forwarded now).
 * proxy_on_request_body(ctx, size, eos): eos == 0 returns Continue (no host call). eos == 1,
 *   on HTTP_REQUEST_HEADERS: get "x-client", get pairs, get
 *   size, add "x-late-add: body", replace "x-client: late", remove "x-remove-me"; logs INFO
 *   "late_headers: request_body get=<status>:<value or -> pairs=<status> size=<status>
 *   add=<status> replace=<status> remove=<status>"; returns Continue.
 * proxy_on_request_trailers: returns Continue (the trailers are forwarded now).
 * proxy_on_response_headers: on HTTP_REQUEST_HEADERS get "x-client" and add
 *   "x-late-response-phase: 1", on HTTP_REQUEST_TRAILERS get "x-trailer" and add
 *   "x-late-trailer: 1"; logs INFO "late_headers: response_headers request_get=<status>
 *   request_add=<status> trailers_get=<status> trailers_add=<status>"; returns Continue.
 * proxy_on_response_body(ctx, size, eos): eos == 0 returns Continue. eos == 1, on
 *   HTTP_RESPONSE_HEADERS: get "x-upstream", get pairs, get size, add "x-late-resp: body",
 *   replace "x-upstream: late", remove "x-drop"; then add "x-late-request: 1" to
 *   HTTP_REQUEST_HEADERS; logs INFO "late_headers: response_body get=<status>:<value or ->
 *   pairs=<status> size=<status> add=<status> replace=<status> remove=<status>
 *   request_add=<status>"; returns Continue.
 * proxy_on_log: get "x-client" (HTTP_REQUEST_HEADERS) and "x-upstream" (HTTP_RESPONSE_HEADERS);
 *   logs INFO "late_headers: log request=<status>:<value or -> response=<status>:<value or ->".
 * Covers: header map reads and writes outside their callback (maps 0, 1 and 2), with the
 * headers either forwarded (Continue) or held (Pause, resumed from a tick) before the body
 * callback runs.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_HELD 64
static uint32_t held[MAX_HELD]; /* paused streams waiting for the tick, 0 = free */

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  for (int i = 0; i < MAX_HELD; i++)
    if (held[i] == ctx) held[i] = 0;
  pw_ctx_remove(ctx);
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
  for (int i = 0; i < MAX_HELD; i++) {
    if (!held[i]) continue;
    uint32_t ctx = held[i];
    held[i] = 0;
    proxy_set_effective_context(ctx);
    pw_status added = pw_add_header(PW_MAP_REQUEST_HEADERS, "x-held-add", "tick");
    pw_logf(PW_LOG_INFO, "late_headers: tick held_add=%u", added);
    proxy_continue_stream(PW_STREAM_REQUEST);
  }
  proxy_set_effective_context(root);
  proxy_set_tick_period_milliseconds(0);
}

static const char *shown(const pw_value *v) { return v->status == PW_OK ? v->data : "-"; }

static pw_status pairs_status(uint32_t map) {
  char *raw = NULL;
  size_t len = 0;
  pw_status status = proxy_get_header_map_pairs(map, &raw, &len);
  free(raw);
  return status;
}

static pw_status size_status(uint32_t map) {
  size_t size = 0;
  return proxy_get_header_map_size(map, &size);
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_value mode = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-mode");
  int paused = mode.status == PW_OK && strcmp(mode.data, "pause") == 0;
  pw_value_free(&mode);
  if (!paused) return PW_CONTINUE;
  for (int i = 0; i < MAX_HELD; i++) {
    if (!held[i]) {
      held[i] = ctx;
      proxy_set_tick_period_milliseconds(20);
      return PW_PAUSE;
    }
  }
  return PW_CONTINUE;
}

/* get read_key, pairs, size, add add_key, replace read_key, remove remove_key on map; the
 * statuses go to out as "get=<status>:<value or -> pairs=.. size=.. add=.. replace=.. remove=..". */
static void touch_map(uint32_t map, const char *read_key, const char *add_key, const char *remove_key,
                      char *out, size_t out_len) {
  pw_value got = pw_get_header(map, read_key);
  pw_status pairs = pairs_status(map);
  pw_status sized = size_status(map);
  pw_status added = pw_add_header(map, add_key, "body");
  pw_status replaced = pw_replace_header(map, read_key, "late");
  pw_status removed = pw_remove_header(map, remove_key);
  snprintf(out, out_len, "get=%u:%s pairs=%u size=%u add=%u replace=%u remove=%u", got.status, shown(&got), pairs,
           sized, added, replaced, removed);
  pw_value_free(&got);
}

PW_EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  if (!eos) return PW_CONTINUE;
  char statuses[256];
  touch_map(PW_MAP_REQUEST_HEADERS, "x-client", "x-late-add", "x-remove-me", statuses, sizeof statuses);
  pw_logf(PW_LOG_INFO, "late_headers: request_body %s", statuses);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_trailers) uint32_t on_request_trailers(uint32_t ctx, uint32_t n) { return PW_CONTINUE; }

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_value got = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-client");
  pw_status added = pw_add_header(PW_MAP_REQUEST_HEADERS, "x-late-response-phase", "1");
  pw_value trailer = pw_get_header(PW_MAP_REQUEST_TRAILERS, "x-trailer");
  pw_status trailer_added = pw_add_header(PW_MAP_REQUEST_TRAILERS, "x-late-trailer", "1");
  pw_logf(PW_LOG_INFO, "late_headers: response_headers request_get=%u request_add=%u trailers_get=%u trailers_add=%u",
          got.status, added, trailer.status, trailer_added);
  pw_value_free(&got);
  pw_value_free(&trailer);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  if (!eos) return PW_CONTINUE;
  char statuses[256];
  touch_map(PW_MAP_RESPONSE_HEADERS, "x-upstream", "x-late-resp", "x-drop", statuses, sizeof statuses);
  pw_status request_added = pw_add_header(PW_MAP_REQUEST_HEADERS, "x-late-request", "1");
  pw_logf(PW_LOG_INFO, "late_headers: response_body %s request_add=%u", statuses, request_added);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_log) void on_log(uint32_t ctx) {
  pw_value request = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-client");
  pw_value response = pw_get_header(PW_MAP_RESPONSE_HEADERS, "x-upstream");
  pw_logf(PW_LOG_INFO, "late_headers: log request=%u:%s response=%u:%s", request.status, shown(&request),
          response.status, shown(&response));
  pw_value_free(&request);
  pw_value_free(&response);
}
