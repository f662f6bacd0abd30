/*
 * grpc_lifecycle: when a gRPC callout's token is valid, and serialized GrpcService upstreams (ABI 0.2.1).
 *
 * Plugin configuration: the upstream handed to proxy_grpc_call / proxy_grpc_stream. "hex:<hex>"
 * is decoded to raw bytes (a serialized envoy.config.core.v3.GrpcService, or any bytes);
 * anything else is a cluster name. One upstream per VM (the last configured root wins).
 *
 * proxy_on_request_headers(ctx), by request header "x-grpc-mode":
 *   - "unary": proxy_grpc_call(service "wasmesh.test.Echo", method "Unary", metadata
 *     [("x-wasm", "lifecycle")], message = header "x-grpc-message" or "ping", timeout = header
 *     "x-grpc-timeout-ms" or 5000) → Pause; the request resumes when the call ends.
 *     With header "x-grpc-cancel-in-callback", the ending callback first calls
 *     proxy_grpc_cancel(token) and records its status.
 *   - "stream": proxy_grpc_stream(method "Stream"), proxy_grpc_send("one", end_stream 1) → Pause;
 *     with header "x-grpc-half-close": proxy_grpc_send("one", end_stream 0), then proxy_grpc_close.
 *   - "late": on the last token dispatched, adds headers "x-grpc-late-cancel",
 *     "x-grpc-late-close", "x-grpc-late-send" with the statuses of proxy_grpc_cancel,
 *     proxy_grpc_close and proxy_grpc_send (in that order), then "x-grpc-events" (see below,
 *     then emptied) → Continue.
 *   A dispatch status other than OK adds "x-grpc-dispatch-status: <status>" → Continue.
 * Every gRPC callback appends to the event list (";"-separated, kept in the VM):
 *   "initial:<token>", "trailing:<token>", "receive:<token>:<message>",
 *   "close:<token>:<status>:<proxy_get_status message>", and "cancel:<status>" after a
 *   cancel from inside a callback.
 * Resuming the request (a unary call's receive, or any close of a known call) adds
 * "x-grpc-status: <status>" and "x-grpc-result: <message or get_status message>", and
 * "x-grpc-callback-cancel: <status>" when a cancel was made in the callback.
 * Covers: token lifetime of unary calls (valid during the ending callback, gone after),
 * proxy_grpc_cancel/close/send on finished tokens, GrpcService upstreams.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_PENDING 64
#define EVENTS_CAP 2048

typedef struct {
  uint32_t token;
  uint32_t stream; /* 0 = free slot */
  int cancel_in_callback;
} pending_call;

static pending_call pending[MAX_PENDING];
static char *upstream;
static size_t upstream_len;
static uint32_t last_token;
static char events[EVENTS_CAP];

static const char SERVICE[] = "wasmesh.test.Echo";

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  size_t len = strlen(config);
  while (len && (config[len - 1] == '\n' || config[len - 1] == ' ')) config[--len] = 0;
  free(upstream);
  if (!strncmp(config, "hex:", 4)) {
    const char *hex = config + 4;
    size_t n = strlen(hex) / 2;
    upstream = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
      int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        free(config);
        free(upstream);
        upstream = NULL;
        return 0;
      }
      upstream[i] = (char)(hi * 16 + lo);
    }
    upstream_len = n;
    free(config);
  } else {
    upstream = config;
    upstream_len = len;
  }
  return 1;
}

static void add_event(const char *event) {
  size_t used = strlen(events);
  if (used + 1 < EVENTS_CAP) snprintf(events + used, EVENTS_CAP - used, "%s%s", used ? ";" : "", event);
}

static void add_number(const char *name, long value) {
  char number[32];
  snprintf(number, sizeof number, "%ld", value);
  pw_add_header(PW_MAP_REQUEST_HEADERS, name, number);
}

static pending_call *find_call(uint32_t token) {
  for (int i = 0; i < MAX_PENDING; i++)
    if (pending[i].stream && pending[i].token == token) return &pending[i];
  return NULL;
}

static void remember(uint32_t token, uint32_t stream, int cancel_in_callback) {
  last_token = token;
  for (int i = 0; i < MAX_PENDING; i++) {
    if (!pending[i].stream) {
      pending[i] = (pending_call){token, stream, cancel_in_callback};
      return;
    }
  }
}

static long header_number(const char *name, long fallback) {
  pw_value v = pw_get_header(PW_MAP_REQUEST_HEADERS, name);
  long n = v.status == PW_OK ? strtol(v.data, NULL, 10) : fallback;
  pw_value_free(&v);
  return n;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_value mode = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-grpc-mode");
  if (mode.status != PW_OK) return PW_CONTINUE;
  uint32_t result = PW_CONTINUE, token = 0;
  pw_status s = PW_OK;
  pw_pair md = pw_pair_of("x-wasm", "lifecycle");
  size_t md_len = 0;
  char *md_blob = pw_pairs_encode(&md, 1, &md_len);
  if (!strcmp(mode.data, "unary")) {
    pw_value message = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-grpc-message");
    const char *text = message.status == PW_OK ? message.data : "ping";
    pw_value cancel = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-grpc-cancel-in-callback");
    s = proxy_grpc_call(upstream, upstream_len, SERVICE, strlen(SERVICE), "Unary", 5, md_blob, md_len, text,
                        strlen(text), (uint32_t)header_number("x-grpc-timeout-ms", 5000), &token);
    if (s == PW_OK) { remember(token, ctx, cancel.status == PW_OK); result = PW_PAUSE; }
    pw_value_free(&message);
    pw_value_free(&cancel);
  } else if (!strcmp(mode.data, "stream")) {
    s = proxy_grpc_stream(upstream, upstream_len, SERVICE, strlen(SERVICE), "Stream", 6, md_blob, md_len, &token);
    if (s == PW_OK) {
      remember(token, ctx, 0);
      pw_value half_close = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-grpc-half-close");
      proxy_grpc_send(token, "one", 3, half_close.status != PW_OK);
      if (half_close.status == PW_OK) proxy_grpc_close(token);
      pw_value_free(&half_close);
      result = PW_PAUSE;
    }
  } else if (!strcmp(mode.data, "late")) {
    add_number("x-grpc-late-cancel", proxy_grpc_cancel(last_token));
    add_number("x-grpc-late-close", proxy_grpc_close(last_token));
    add_number("x-grpc-late-send", proxy_grpc_send(last_token, "x", 1, 0));
    pw_add_header(PW_MAP_REQUEST_HEADERS, "x-grpc-events", events);
    events[0] = 0;
  }
  if (s != PW_OK) add_number("x-grpc-dispatch-status", s);
  free(md_blob);
  pw_value_free(&mode);
  return result;
}

/* The call ended (receive of a unary call, or a close): optionally cancel, then resume its request. */
static void finish(uint32_t token, long status, const char *message) {
  pending_call *call = find_call(token);
  if (!call) return;
  long cancelled = -1;
  if (call->cancel_in_callback) {
    cancelled = proxy_grpc_cancel(token);
    char event[32];
    snprintf(event, sizeof event, "cancel:%ld", cancelled);
    add_event(event);
  }
  proxy_set_effective_context(call->stream);
  add_number("x-grpc-status", status);
  pw_add_header(PW_MAP_REQUEST_HEADERS, "x-grpc-result", message);
  if (cancelled >= 0) add_number("x-grpc-callback-cancel", cancelled);
  proxy_continue_stream(PW_STREAM_REQUEST);
  call->stream = 0;
}

PW_EXPORT(proxy_on_grpc_receive_initial_metadata) void on_initial(uint32_t root, uint32_t token, uint32_t n) {
  char event[32];
  snprintf(event, sizeof event, "initial:%u", token);
  add_event(event);
}

PW_EXPORT(proxy_on_grpc_receive_trailing_metadata) void on_trailing(uint32_t root, uint32_t token, uint32_t n) {
  char event[32];
  snprintf(event, sizeof event, "trailing:%u", token);
  add_event(event);
}

PW_EXPORT(proxy_on_grpc_receive) void on_receive(uint32_t root, uint32_t token, uint32_t size) {
  pw_value message = pw_get_buffer(PW_BUF_GRPC_MESSAGE, 0, size);
  const char *text = message.data ? message.data : "";
  char event[256];
  snprintf(event, sizeof event, "receive:%u:%s", token, text);
  add_event(event);
  if (token & 1) finish(token, 0, text); /* a unary call ends with its message */
  pw_value_free(&message);
}

PW_EXPORT(proxy_on_grpc_close) void on_close(uint32_t root, uint32_t token, uint32_t status) {
  uint32_t code = 0;
  char *raw = NULL;
  size_t len = 0;
  proxy_get_status(&code, &raw, &len);
  pw_value message = pw_take(PW_OK, raw, len);
  const char *text = message.data ? message.data : "";
  char event[256];
  snprintf(event, sizeof event, "close:%u:%d:%s", token, (int32_t)status, text);
  add_event(event);
  finish(token, (int32_t)status, text);
  pw_value_free(&message);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  for (int i = 0; i < MAX_PENDING; i++)
    if (pending[i].stream == ctx) pending[i].stream = 0;
  pw_ctx_remove(ctx);
}
