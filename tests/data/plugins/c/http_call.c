/*
 * http_call: an HTTP callout on every request (ABI 0.2.1).
 *
 * Plugin configuration: the upstream (cluster) name, surrounding whitespace trimmed. An empty
 * configuration is rejected: on_configure logs ERROR "http_call: configuration must name a
 * cluster" and returns false.
 *
 * proxy_on_request_headers(ctx): dispatches proxy_http_call(cluster, headers
 *   [(":method","GET"), (":path","/callout"), (":authority", cluster), ("x-callout-from", "wasm")],
 *   body "ping", no trailers, timeout 5000 ms).
 *   - dispatch status != OK: proxy_send_local_response(500, "callout_dispatch_failed",
 *     body "dispatch failed: <status>\n", no headers, -1) and Pause;
 *   - otherwise logs INFO "http_call: dispatched token=<token> ctx=<ctx>" and returns Pause.
 * proxy_on_http_call_response(root, token, num_headers, body_size, num_trailers):
 *   - looks up the stream that issued token (unknown token: logs ERROR and returns);
 *   - proxy_get_status(&code, &message); proxy_set_effective_context(stream);
 *   - num_headers == 0 (failure/timeout/reset): proxy_send_local_response(503, "callout_failed",
 *     body "callout failed: <code> <message>\n", headers [("x-callout-failed", "1")], -1);
 *   - otherwise reads call response header ":status" (map 6), the pairs of map 6 and 7, and
 *     body bytes (buffer 4, 0..body_size); adds request headers
 *     "x-callout-status: <:status>", "x-callout-body: <first 128 body bytes, CR/LF → space>",
 *     "x-callout-header-count: <pairs in map 6>", "x-callout-trailer-count: <pairs in map 7>",
 *     "x-callout-get-status: <code>"; then proxy_continue_stream(HTTP_REQUEST), so the upstream
 *     sees the original request plus these headers;
 *   - logs INFO "http_call: response token=<token> headers=<n> body=<size> trailers=<n>
 *     status=<code>".
 * Covers: proxy_http_call, proxy_on_http_call_response, proxy_get_status,
 * proxy_set_effective_context, proxy_continue_stream(HTTP_REQUEST), maps 6/7, buffer 4.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_ROOTS 16
#define MAX_CALLS 256

static uint32_t cluster_roots[MAX_ROOTS];
static char *clusters[MAX_ROOTS];
static uint32_t call_tokens[MAX_CALLS];
static uint32_t call_streams[MAX_CALLS];

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

static char *trim(char *s) {
  while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
  size_t len = strlen(s);
  while (len && (s[len - 1] == ' ' || s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == '\t')) s[--len] = 0;
  return s;
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  char *name = trim(config);
  if (!name[0]) {
    pw_log(PW_LOG_ERROR, "http_call: configuration must name a cluster");
    free(config);
    return 0;
  }
  for (int i = 0; i < MAX_ROOTS; i++) {
    if (cluster_roots[i] == root || cluster_roots[i] == 0) {
      free(clusters[i]);
      cluster_roots[i] = root;
      clusters[i] = strdup(name);
      free(config);
      return 1;
    }
  }
  free(config);
  return 0;
}

static const char *cluster_for(uint32_t ctx) {
  uint32_t root = pw_ctx_root(ctx);
  for (int i = 0; i < MAX_ROOTS; i++)
    if (cluster_roots[i] == root) return clusters[i];
  return "";
}

static void local_reply(uint32_t code, const char *details, const char *body, const char *header, const char *value) {
  size_t blob_len = 0;
  char *blob = NULL;
  if (header) {
    pw_pair pair = pw_pair_of(header, value);
    blob = pw_pairs_encode(&pair, 1, &blob_len);
  }
  proxy_send_local_response(code, details, strlen(details), body, strlen(body), blob, blob_len, -1);
  free(blob);
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  const char *cluster = cluster_for(ctx);
  pw_pair headers[4] = {pw_pair_of(":method", "GET"), pw_pair_of(":path", "/callout"),
                        pw_pair_of(":authority", cluster), pw_pair_of("x-callout-from", "wasm")};
  size_t blob_len = 0;
  char *blob = pw_pairs_encode(headers, 4, &blob_len);
  uint32_t token = 0;
  pw_status s = proxy_http_call(cluster, strlen(cluster), blob, blob_len, "ping", 4, NULL, 0, 5000, &token);
  free(blob);
  if (s != PW_OK) {
    char body[64];
    snprintf(body, sizeof body, "dispatch failed: %u\n", s);
    local_reply(500, "callout_dispatch_failed", body, NULL, NULL);
    return PW_PAUSE;
  }
  for (int i = 0; i < MAX_CALLS; i++) {
    if (call_streams[i] == 0) { call_tokens[i] = token; call_streams[i] = ctx; break; }
  }
  pw_logf(PW_LOG_INFO, "http_call: dispatched token=%u ctx=%u", token, ctx);
  return PW_PAUSE;
}

static int count_pairs(uint32_t map) {
  char *raw = NULL;
  size_t len = 0;
  int count = 0;
  if (proxy_get_header_map_pairs(map, &raw, &len) == PW_OK) count = pw_pairs_count(raw, len);
  free(raw);
  return count;
}

PW_EXPORT(proxy_on_http_call_response) void on_http_call_response(uint32_t root, uint32_t token, uint32_t num_headers,
                                                                  uint32_t body_size, uint32_t num_trailers) {
  uint32_t stream = 0;
  for (int i = 0; i < MAX_CALLS; i++) {
    if (call_streams[i] && call_tokens[i] == token) { stream = call_streams[i]; call_streams[i] = 0; break; }
  }
  if (!stream) {
    pw_logf(PW_LOG_ERROR, "http_call: unknown token=%u", token);
    return;
  }
  uint32_t code = 0;
  char *message = NULL;
  size_t message_len = 0;
  proxy_get_status(&code, &message, &message_len);
  pw_value msg = pw_take(PW_OK, message, message_len);
  proxy_set_effective_context(stream);
  pw_logf(PW_LOG_INFO, "http_call: response token=%u headers=%u body=%u trailers=%u status=%u", token, num_headers,
          body_size, num_trailers, code);
  if (num_headers == 0) {
    char body[300];
    snprintf(body, sizeof body, "callout failed: %u %s\n", code, msg.data);
    local_reply(503, "callout_failed", body, "x-callout-failed", "1");
    pw_value_free(&msg);
    return;
  }
  pw_value status = pw_get_header(PW_MAP_HTTP_CALL_RESPONSE_HEADERS, ":status");
  pw_value body = pw_get_buffer(PW_BUF_HTTP_CALL_RESPONSE_BODY, 0, body_size);
  char snippet[129] = "";
  if (body.status == PW_OK) {
    size_t len = body.len > 128 ? 128 : body.len;
    memcpy(snippet, body.data, len);
    snippet[len] = 0;
    for (size_t i = 0; i < len; i++)
      if (snippet[i] == '\r' || snippet[i] == '\n') snippet[i] = ' ';
  }
  char number[32];
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-callout-status", status.data ? status.data : "");
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-callout-body", snippet);
  snprintf(number, sizeof number, "%d", count_pairs(PW_MAP_HTTP_CALL_RESPONSE_HEADERS));
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-callout-header-count", number);
  snprintf(number, sizeof number, "%d", count_pairs(PW_MAP_HTTP_CALL_RESPONSE_TRAILERS));
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-callout-trailer-count", number);
  snprintf(number, sizeof number, "%u", code);
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-callout-get-status", number);
  proxy_continue_stream(PW_STREAM_REQUEST);
  pw_value_free(&status);
  pw_value_free(&body);
  pw_value_free(&msg);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  for (int i = 0; i < MAX_CALLS; i++)
    if (call_streams[i] == ctx) call_streams[i] = 0;
  pw_ctx_remove(ctx);
}
