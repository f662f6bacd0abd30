/*
 * foreign: host foreign functions in both directions (ABI 0.2.1).
 *
 * Plugin configuration: "<function name> <arguments>" — the name up to the first space, the
 * arguments (raw bytes) after it. Empty configuration means name "wasmesh_echo", arguments
 * "hello".
 *
 * proxy_on_request_headers(ctx): proxy_call_foreign_function(name, arguments) and
 *   proxy_call_foreign_function("wasmesh_no_such_function", "x"); logs INFO
 *   "foreign: call name=<name> status=<status> result_len=<len>"; Continue.
 * proxy_on_response_headers: adds "x-foreign-status: <status>", "x-foreign-result:
 *   hex:<lower-case hex of the result bytes>" and "x-foreign-missing-status: <status of the
 *   unknown-name call>" (NOT_FOUND = 1 expected); Continue.
 * proxy_on_foreign_function(root, function_id, args_size): reads buffer 8
 *   (FOREIGN_FUNCTION_ARGUMENTS, 0..args_size) and logs INFO "foreign: on_foreign_function
 *   root=<root> id=<function_id> size=<args_size> args=hex:<hex of the bytes>
 *   status=<read status>".
 * Covers: proxy_call_foreign_function, proxy_on_foreign_function, buffer 8.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_STREAMS 64

static char *fn_name;
static char *fn_args;
static size_t fn_args_len;

typedef struct {
  uint32_t ctx;
  pw_status status, missing;
  char *result_hex;
} stream_state;

static stream_state streams[MAX_STREAMS];

static char *hex(const char *data, size_t len) {
  char *out = malloc(2 * len + 5);
  memcpy(out, "hex:", 4);
  for (size_t i = 0; i < len; i++) snprintf(out + 4 + 2 * i, 3, "%02x", (unsigned char)data[i]);
  out[4 + 2 * len] = 0;
  return out;
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  free(fn_name);
  free(fn_args);
  if (!config[0]) {
    fn_name = strdup("wasmesh_echo");
    fn_args = strdup("hello");
  } else {
    char *space = strchr(config, ' ');
    if (space) *space = 0;
    fn_name = strdup(config);
    fn_args = strdup(space ? space + 1 : "");
  }
  fn_args_len = strlen(fn_args);
  free(config);
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

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 1);
  if (!st) return PW_CONTINUE;
  char *result = NULL;
  size_t result_len = 0;
  const char *name = fn_name ? fn_name : "wasmesh_echo";
  st->status = proxy_call_foreign_function(name, strlen(name), fn_args ? fn_args : "", fn_args_len, &result, &result_len);
  free(st->result_hex);
  st->result_hex = hex(result ? result : "", st->status == PW_OK ? result_len : 0);
  free(result);
  pw_logf(PW_LOG_INFO, "foreign: call name=%s status=%u result_len=%zu", name, st->status, result_len);
  result = NULL;
  static const char MISSING[] = "wasmesh_no_such_function";
  st->missing = proxy_call_foreign_function(MISSING, sizeof MISSING - 1, "x", 1, &result, &result_len);
  free(result);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 0);
  if (!st) return PW_CONTINUE;
  char number[16];
  snprintf(number, sizeof number, "%u", st->status);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-foreign-status", number);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-foreign-result", st->result_hex ? st->result_hex : "hex:");
  snprintf(number, sizeof number, "%u", st->missing);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-foreign-missing-status", number);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_foreign_function) void on_foreign_function(uint32_t root, uint32_t function_id, uint32_t args_size) {
  pw_value args = pw_get_buffer(PW_BUF_FOREIGN_ARGS, 0, args_size);
  char *encoded = hex(args.data ? args.data : "", args.len);
  pw_logf(PW_LOG_INFO, "foreign: on_foreign_function root=%u id=%u size=%u args=%s status=%u", root, function_id,
          args_size, encoded, args.status);
  free(encoded);
  pw_value_free(&args);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  stream_state *st = stream_for(ctx, 0);
  if (st) { free(st->result_hex); memset(st, 0, sizeof *st); }
}
