/*
 * grpc: gRPC callouts, unary and streaming (ABI 0.2.1).
 *
 * Plugin configuration: the gRPC upstream (cluster) name, trimmed; empty means "grpc".
 * Calls go to service "wasmesh.test.Echo": method "Unary" for unary calls, "Stream" for the
 * bidirectional stream. Messages are raw bytes (the host frames them, no protobuf needed);
 * initial metadata sent is [("x-wasm", "grpc")]; unary timeout 5000 ms.
 *
 * proxy_on_request_headers(ctx): reads request header "x-grpc-mode":
 *   - "unary": proxy_grpc_call(message = value of header "x-grpc-message", or "ping" when
 *     absent) → Pause;
 *   - "stream": proxy_grpc_stream, then proxy_grpc_send("one", end_stream 0),
 *     proxy_grpc_send("two", end_stream 0), proxy_grpc_close(token) (half-close) → Pause;
 *   - "cancel": proxy_grpc_call("ping") then proxy_grpc_cancel(token); adds request header
 *     "x-grpc-cancel-status: <cancel status>" → Continue (no callback may follow);
 *   - "stream-cancel": proxy_grpc_stream, proxy_grpc_send("one", 0), proxy_grpc_cancel(token);
 *     adds "x-grpc-cancel-status: <status>" → Continue;
 *   - absent/other: Continue untouched.
 *   Any dispatch status != OK: adds request header "x-grpc-dispatch-status: <status>" and
 *   returns Continue.
 * Callbacks (arrive on the root; each logs INFO "grpc: <callback> token=<t> ..."):
 *   - on_grpc_receive_initial_metadata(root, token, n): records the pair count of map 4;
 *     log "grpc: initial_metadata token=<t> n=<n> pairs=<pairs>";
 *   - on_grpc_receive(root, token, size): reads buffer 5 (0..size) and appends it to the
 *     token's message list (comma-separated); log "grpc: receive token=<t> size=<size> data=<msg>".
 *     For a unary call this is the completion: the request resumes (see below) with status 0;
 *   - on_grpc_receive_trailing_metadata(root, token, n): records the pair count of map 5;
 *     log "grpc: trailing_metadata token=<t> n=<n> pairs=<pairs>";
 *   - on_grpc_close(root, token, status): proxy_get_status(&code, &msg); log
 *     "grpc: close token=<t> status=<status> get_status=<code> message=<msg>"; the request
 *     resumes with that status (unless already resumed by a unary receive).
 *   Resuming = proxy_set_effective_context(stream), add request headers
 *   "x-grpc-status: <status>", "x-grpc-messages: <messages comma-joined>",
 *   "x-grpc-initial-metadata: <pairs>", "x-grpc-trailing-metadata: <pairs>" (-1 when that
 *   callback had not run before the resume; for a successful unary call the trailing metadata
 *   usually arrives after), then proxy_continue_stream(HTTP_REQUEST).
 * Covers: proxy_grpc_call/stream/send/close/cancel, proxy_get_status, all four gRPC callbacks,
 * maps 4/5, buffer 5.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_CALLS 128
#define MAX_ROOTS 16

typedef struct {
  uint32_t token;
  uint32_t stream;
  int unary;
  int initial;
  int trailing;
  char messages[512];
} call_state;

static call_state calls[MAX_CALLS];
static uint32_t cluster_roots[MAX_ROOTS];
static char *clusters[MAX_ROOTS];

static const char SERVICE[] = "wasmesh.test.Echo";

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  char *name = config;
  while (*name == ' ' || *name == '\n' || *name == '\r' || *name == '\t') name++;
  size_t len = strlen(name);
  while (len && (name[len - 1] == ' ' || name[len - 1] == '\n' || name[len - 1] == '\r' || name[len - 1] == '\t')) name[--len] = 0;
  for (int i = 0; i < MAX_ROOTS; i++) {
    if (cluster_roots[i] == root || cluster_roots[i] == 0) {
      free(clusters[i]);
      cluster_roots[i] = root;
      clusters[i] = strdup(len ? name : "grpc");
      break;
    }
  }
  free(config);
  return 1;
}

static const char *cluster_for(uint32_t ctx) {
  uint32_t root = pw_ctx_root(ctx);
  for (int i = 0; i < MAX_ROOTS; i++)
    if (cluster_roots[i] == root) return clusters[i];
  return "grpc";
}

static call_state *call_for(uint32_t token) {
  for (int i = 0; i < MAX_CALLS; i++)
    if (calls[i].stream && calls[i].token == token) return &calls[i];
  return NULL;
}

static call_state *new_call(uint32_t token, uint32_t stream, int unary) {
  for (int i = 0; i < MAX_CALLS; i++) {
    if (calls[i].stream == 0) {
      memset(&calls[i], 0, sizeof calls[i]);
      calls[i].token = token;
      calls[i].stream = stream;
      calls[i].unary = unary;
      calls[i].initial = -1;
      calls[i].trailing = -1;
      return &calls[i];
    }
  }
  return NULL;
}

static void add_number(const char *name, long value) {
  char number[32];
  snprintf(number, sizeof number, "%ld", value);
  pw_add_header(PW_MAP_REQUEST_HEADERS, name, number);
}

static pw_status open_call(uint32_t ctx, int unary, const char *message, size_t message_len, uint32_t *token) {
  const char *cluster = cluster_for(ctx);
  pw_pair md = pw_pair_of("x-wasm", "grpc");
  size_t md_len = 0;
  char *md_blob = pw_pairs_encode(&md, 1, &md_len);
  pw_status s;
  if (unary)
    s = proxy_grpc_call(cluster, strlen(cluster), SERVICE, strlen(SERVICE), "Unary", 5, md_blob, md_len, message,
                        message_len, 5000, token);
  else
    s = proxy_grpc_stream(cluster, strlen(cluster), SERVICE, strlen(SERVICE), "Stream", 6, md_blob, md_len, token);
  free(md_blob);
  return s;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_value mode = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-grpc-mode");
  if (mode.status != PW_OK) return PW_CONTINUE;
  uint32_t result = PW_CONTINUE, token = 0;
  pw_status s = PW_OK;
  if (!strcmp(mode.data, "unary")) {
    pw_value message = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-grpc-message");
    if (message.status == PW_OK) s = open_call(ctx, 1, message.data, message.len, &token);
    else s = open_call(ctx, 1, "ping", 4, &token);
    pw_value_free(&message);
    if (s == PW_OK) { new_call(token, ctx, 1); result = PW_PAUSE; }
  } else if (!strcmp(mode.data, "stream")) {
    s = open_call(ctx, 0, NULL, 0, &token);
    if (s == PW_OK) {
      new_call(token, ctx, 0);
      pw_status s1 = proxy_grpc_send(token, "one", 3, 0);
      pw_status s2 = proxy_grpc_send(token, "two", 3, 0);
      pw_status s3 = proxy_grpc_close(token);
      pw_logf(PW_LOG_INFO, "grpc: stream token=%u send=%u,%u close=%u", token, s1, s2, s3);
      result = PW_PAUSE;
    }
  } else if (!strcmp(mode.data, "cancel") || !strcmp(mode.data, "stream-cancel")) {
    int unary = !strcmp(mode.data, "cancel");
    s = open_call(ctx, unary, "ping", 4, &token);
    if (s == PW_OK) {
      if (!unary) proxy_grpc_send(token, "one", 3, 0);
      add_number("x-grpc-cancel-status", proxy_grpc_cancel(token));
    }
  }
  if (s != PW_OK) add_number("x-grpc-dispatch-status", s);
  pw_value_free(&mode);
  return result;
}

static void resume(call_state *call, long status) {
  proxy_set_effective_context(call->stream);
  add_number("x-grpc-status", status);
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-grpc-messages", call->messages);
  add_number("x-grpc-initial-metadata", call->initial);
  add_number("x-grpc-trailing-metadata", call->trailing);
  proxy_continue_stream(PW_STREAM_REQUEST);
  call->stream = 0;
}

static int count_pairs(uint32_t map) {
  char *raw = NULL;
  size_t len = 0;
  int count = 0;
  if (proxy_get_header_map_pairs(map, &raw, &len) == PW_OK) count = pw_pairs_count(raw, len);
  free(raw);
  return count;
}

PW_EXPORT(proxy_on_grpc_receive_initial_metadata) void on_initial(uint32_t root, uint32_t token, uint32_t n) {
  call_state *call = call_for(token);
  int pairs = count_pairs(PW_MAP_GRPC_INITIAL_METADATA);
  if (call) call->initial = pairs;
  pw_logf(PW_LOG_INFO, "grpc: initial_metadata token=%u n=%u pairs=%d", token, n, pairs);
}

PW_EXPORT(proxy_on_grpc_receive) void on_receive(uint32_t root, uint32_t token, uint32_t size) {
  call_state *call = call_for(token);
  pw_value message = pw_get_buffer(PW_BUF_GRPC_MESSAGE, 0, size);
  const char *text = message.data ? message.data : "";
  pw_logf(PW_LOG_INFO, "grpc: receive token=%u size=%u data=%s", token, size, text);
  if (call) {
    size_t used = strlen(call->messages);
    snprintf(call->messages + used, sizeof call->messages - used, "%s%s", used ? "," : "", text);
    if (call->unary) resume(call, 0);
  }
  pw_value_free(&message);
}

PW_EXPORT(proxy_on_grpc_receive_trailing_metadata) void on_trailing(uint32_t root, uint32_t token, uint32_t n) {
  call_state *call = call_for(token);
  int pairs = count_pairs(PW_MAP_GRPC_TRAILING_METADATA);
  if (call) call->trailing = pairs;
  pw_logf(PW_LOG_INFO, "grpc: trailing_metadata token=%u n=%u pairs=%d", token, n, pairs);
}

PW_EXPORT(proxy_on_grpc_close) void on_close(uint32_t root, uint32_t token, uint32_t status) {
  uint32_t code = 0;
  char *raw = NULL;
  size_t len = 0;
  proxy_get_status(&code, &raw, &len);
  pw_value message = pw_take(PW_OK, raw, len);
  pw_logf(PW_LOG_INFO, "grpc: close token=%u status=%d get_status=%u message=%s", token, (int32_t)status, code,
          message.data);
  call_state *call = call_for(token);
  if (call) resume(call, (int32_t)status);
  pw_value_free(&message);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  for (int i = 0; i < MAX_CALLS; i++)
    if (calls[i].stream == ctx) calls[i].stream = 0;
  pw_ctx_remove(ctx);
}
