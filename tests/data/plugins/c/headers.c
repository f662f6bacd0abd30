/*
 * headers: request/response header manipulation (ABI 0.2.1).
 *
 * Plugin configuration: zero or more lines "<op> <side> <name> [<value>]" where op is add,
 * replace or remove, side is request or response, and value is the rest of the line after one
 * space (may contain spaces; empty when missing). Unknown lines are logged at WARN
 * ("headers: ignoring config line N") and skipped; on_configure always returns true.
 *
 * proxy_on_request_headers(ctx, n, eos):
 *   - reads all request headers with proxy_get_header_map_pairs and counts the pairs;
 *   - reads ":path" with proxy_get_header_map_value; reads the absent key
 *     "x-wasmesh-absent" and remembers that call's status;
 *   - reads proxy_get_header_map_size(HTTP_REQUEST_HEADERS) and remembers the reported size;
 *   - applies the config's "request" operations in config order (add/replace/remove);
 *   - logs INFO "headers: request n=<n> pairs=<pairs> eos=<eos> path=<path>"; returns Continue.
 * proxy_on_request_trailers(ctx, n): replaces request trailer "x-trailer-seen: request"; Continue.
 * proxy_on_response_headers(ctx, n, eos):
 *   - applies the config's "response" operations in config order;
 *   - adds response headers: "x-echo-path: <:path of the request>",
 *     "x-request-header-count: <pairs counted on the request>",
 *     "x-request-header-map-size: <value proxy_get_header_map_size reported>",
 *     "x-absent-status: <status of the absent-key lookup>" (1 = NOT_FOUND expected in 0.2.x);
 *   - finally reads all response headers as pairs and writes them back with
 *     proxy_set_header_map_pairs plus one extra pair "x-pairs-roundtrip: <count read>";
 *   - returns Continue.
 * proxy_on_response_trailers(ctx, n): adds response trailer "x-trailer-seen: response"; Continue.
 * Covers: get/set header map pairs, get/add/replace/remove header map value, get header map size,
 * maps 0-3, proxy_on_request/response_headers/trailers, proxy_on_configure + buffer 7.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_OPS 32
#define MAX_STREAMS 256

typedef struct {
  uint32_t root;
  int op;       /* 0 add, 1 replace, 2 remove */
  int response; /* 0 request side, 1 response side */
  char *name;
  char *value;
} header_op;

static header_op ops[MAX_OPS];
static int op_count;

typedef struct {
  uint32_t ctx;
  char *path;
  int pairs;
  size_t map_size;
  pw_status absent_status;
} stream_state;

static stream_state streams[MAX_STREAMS];

static stream_state *stream_for(uint32_t ctx, int create) {
  for (int i = 0; i < MAX_STREAMS; i++)
    if (streams[i].ctx == ctx) return &streams[i];
  if (!create) return NULL;
  for (int i = 0; i < MAX_STREAMS; i++)
    if (streams[i].ctx == 0) { streams[i].ctx = ctx; return &streams[i]; }
  return NULL;
}

static void drop_root_ops(uint32_t root) {
  int kept = 0;
  for (int i = 0; i < op_count; i++) {
    if (ops[i].root == root) { free(ops[i].name); free(ops[i].value); }
    else ops[kept++] = ops[i];
  }
  op_count = kept;
}

static void parse_line(uint32_t root, char *line, int line_no) {
  char *words[3] = {0};
  char *cursor = line;
  for (int w = 0; w < 3; w++) {
    while (*cursor == ' ') cursor++;
    if (!*cursor) break;
    words[w] = cursor;
    while (*cursor && *cursor != ' ') cursor++;
    if (*cursor) *cursor++ = 0;
  }
  if (!words[0]) return;
  int op = !strcmp(words[0], "add") ? 0 : !strcmp(words[0], "replace") ? 1 : !strcmp(words[0], "remove") ? 2 : -1;
  int side = words[1] && !strcmp(words[1], "request") ? 0 : words[1] && !strcmp(words[1], "response") ? 1 : -1;
  if (op < 0 || side < 0 || !words[2] || op_count == MAX_OPS) {
    pw_logf(PW_LOG_WARN, "headers: ignoring config line %d", line_no);
    return;
  }
  ops[op_count].root = root;
  ops[op_count].op = op;
  ops[op_count].response = side;
  ops[op_count].name = strdup(words[2]);
  ops[op_count].value = strdup(cursor);
  op_count++;
}

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  drop_root_ops(root);
  int line_no = 1;
  for (char *line = config; line; line_no++) {
    char *next = strchr(line, '\n');
    if (next) *next++ = 0;
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[len - 1] = 0;
    parse_line(root, line, line_no);
    line = next;
  }
  free(config);
  return 1;
}

static void apply_ops(uint32_t ctx, int response) {
  uint32_t root = pw_ctx_root(ctx);
  uint32_t map = response ? PW_MAP_RESPONSE_HEADERS : PW_MAP_REQUEST_HEADERS;
  for (int i = 0; i < op_count; i++) {
    if (ops[i].root != root || ops[i].response != response) continue;
    if (ops[i].op == 0) pw_add_header(map, ops[i].name, ops[i].value);
    else if (ops[i].op == 1) pw_replace_header(map, ops[i].name, ops[i].value);
    else pw_remove_header(map, ops[i].name);
  }
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 1);
  char *raw = NULL;
  size_t raw_len = 0;
  int pairs = 0;
  if (proxy_get_header_map_pairs(PW_MAP_REQUEST_HEADERS, &raw, &raw_len) == PW_OK) pairs = pw_pairs_count(raw, raw_len);
  free(raw);
  pw_value path = pw_get_header(PW_MAP_REQUEST_HEADERS, ":path");
  pw_value absent = pw_get_header(PW_MAP_REQUEST_HEADERS, "x-wasmesh-absent");
  size_t map_size = 0;
  proxy_get_header_map_size(PW_MAP_REQUEST_HEADERS, &map_size);
  if (st) {
    free(st->path);
    st->path = path.data ? strdup(path.data) : strdup("");
    st->pairs = pairs;
    st->map_size = map_size;
    st->absent_status = absent.status;
  }
  apply_ops(ctx, 0);
  pw_logf(PW_LOG_INFO, "headers: request n=%u pairs=%d eos=%u path=%s", n, pairs, eos, path.data ? path.data : "");
  pw_value_free(&path);
  pw_value_free(&absent);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_trailers) uint32_t on_request_trailers(uint32_t ctx, uint32_t n) {
  pw_replace_header(PW_MAP_REQUEST_TRAILERS, "x-trailer-seen", "request");
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  apply_ops(ctx, 1);
  stream_state *st = stream_for(ctx, 0);
  char number[32];
  if (st) {
    pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-echo-path", st->path ? st->path : "");
    snprintf(number, sizeof number, "%d", st->pairs);
    pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-request-header-count", number);
    snprintf(number, sizeof number, "%zu", st->map_size);
    pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-request-header-map-size", number);
    snprintf(number, sizeof number, "%u", st->absent_status);
    pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-absent-status", number);
  }
  char *raw = NULL;
  size_t raw_len = 0;
  if (proxy_get_header_map_pairs(PW_MAP_RESPONSE_HEADERS, &raw, &raw_len) == PW_OK) {
    enum { MAX_PAIRS = 128 };
    pw_pair pairs[MAX_PAIRS + 1];
    int count = pw_pairs_decode(raw, raw_len, pairs, MAX_PAIRS);
    if (count >= 0) {
      snprintf(number, sizeof number, "%d", count);
      pairs[count] = pw_pair_of("x-pairs-roundtrip", number);
      size_t blob_len = 0;
      char *blob = pw_pairs_encode(pairs, count + 1, &blob_len);
      proxy_set_header_map_pairs(PW_MAP_RESPONSE_HEADERS, blob, blob_len);
      free(blob);
    }
  }
  free(raw);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_trailers) uint32_t on_response_trailers(uint32_t ctx, uint32_t n) {
  pw_add_header(PW_MAP_RESPONSE_TRAILERS, "x-trailer-seen", "response");
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  stream_state *st = stream_for(ctx, 0);
  if (st) { free(st->path); memset(st, 0, sizeof *st); }
  drop_root_ops(ctx);
  pw_ctx_remove(ctx);
}
