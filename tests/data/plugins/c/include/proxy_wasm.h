/*
 * proxy_wasm.h: the proxy-wasm host interface as seen from a C plugin (wasm32-wasi).
 *
 * Declares every host function a plugin may import from module "env" (ABI 0.1.0, 0.2.0 and
 * 0.2.1; the linker only imports the ones a plugin actually calls), the numeric enums, and a
 * few small helpers (logging, header access, the "pairs" encoding, a context table).
 * Callbacks (proxy_on_*) are defined by each plugin with PW_EXPORT, because their arity
 * depends on the ABI version the plugin declares with PW_ABI_0_1_0 / PW_ABI_0_2_0 / PW_ABI_0_2_1.
 *
 * Conventions: every host function returns a status (pw_status); strings are (pointer, length)
 * and never NUL-terminated on the wire; data the host returns was allocated with this module's
 * exported malloc and must be freed by the plugin.
 */
#ifndef WASMESH_PROXY_WASM_H
#define WASMESH_PROXY_WASM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- export / import attributes ------------------------------------------------------- */

#define PW_EXPORT(name) __attribute__((export_name(#name)))
#define PW_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))

#define PW_ABI_0_1_0 PW_EXPORT(proxy_abi_version_0_1_0) void proxy_abi_version_0_1_0(void) {}
#define PW_ABI_0_2_0 PW_EXPORT(proxy_abi_version_0_2_0) void proxy_abi_version_0_2_0(void) {}
#define PW_ABI_0_2_1 PW_EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

/* ---- enums ---------------------------------------------------------------------------- */

typedef uint32_t pw_status;
enum {
  PW_OK = 0, PW_NOT_FOUND = 1, PW_BAD_ARGUMENT = 2, PW_SERIALIZATION_FAILURE = 3,
  PW_PARSE_FAILURE = 4, PW_BAD_EXPRESSION = 5, PW_INVALID_MEMORY_ACCESS = 6, PW_EMPTY = 7,
  PW_CAS_MISMATCH = 8, PW_RESULT_MISMATCH = 9, PW_INTERNAL_FAILURE = 10,
  PW_BROKEN_CONNECTION = 11, PW_UNIMPLEMENTED = 12,
};
enum { PW_LOG_TRACE = 0, PW_LOG_DEBUG = 1, PW_LOG_INFO = 2, PW_LOG_WARN = 3, PW_LOG_ERROR = 4, PW_LOG_CRITICAL = 5 };
enum { PW_CONTINUE = 0, PW_PAUSE = 1 };
enum {
  PW_BUF_REQUEST_BODY = 0, PW_BUF_RESPONSE_BODY = 1, PW_BUF_DOWNSTREAM_DATA = 2,
  PW_BUF_UPSTREAM_DATA = 3, PW_BUF_HTTP_CALL_RESPONSE_BODY = 4, PW_BUF_GRPC_MESSAGE = 5,
  PW_BUF_VM_CONFIGURATION = 6, PW_BUF_PLUGIN_CONFIGURATION = 7, PW_BUF_FOREIGN_ARGS = 8,
};
enum {
  PW_MAP_REQUEST_HEADERS = 0, PW_MAP_REQUEST_TRAILERS = 1, PW_MAP_RESPONSE_HEADERS = 2,
  PW_MAP_RESPONSE_TRAILERS = 3, PW_MAP_GRPC_INITIAL_METADATA = 4, PW_MAP_GRPC_TRAILING_METADATA = 5,
  PW_MAP_HTTP_CALL_RESPONSE_HEADERS = 6, PW_MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
};
enum { PW_STREAM_REQUEST = 0, PW_STREAM_RESPONSE = 1, PW_STREAM_DOWNSTREAM = 2, PW_STREAM_UPSTREAM = 3 };
enum { PW_PEER_UNKNOWN = 0, PW_PEER_LOCAL = 1, PW_PEER_REMOTE = 2 };
enum { PW_METRIC_COUNTER = 0, PW_METRIC_GAUGE = 1, PW_METRIC_HISTOGRAM = 2 };

/* ---- host functions (module "env") ---------------------------------------------------- */

/* logging, time, timers */
PW_IMPORT(proxy_log) pw_status proxy_log(uint32_t level, const char *msg, size_t msg_len);
PW_IMPORT(proxy_get_log_level) pw_status proxy_get_log_level(uint32_t *level_out);
PW_IMPORT(proxy_get_current_time_nanoseconds) pw_status proxy_get_current_time_nanoseconds(uint64_t *ns_out);
PW_IMPORT(proxy_set_tick_period_milliseconds) pw_status proxy_set_tick_period_milliseconds(uint32_t period_ms);

/* lifecycle */
PW_IMPORT(proxy_done) pw_status proxy_done(void);
PW_IMPORT(proxy_set_effective_context) pw_status proxy_set_effective_context(uint32_t context_id);
PW_IMPORT(proxy_call_foreign_function) pw_status proxy_call_foreign_function(
    const char *name, size_t name_len, const char *args, size_t args_len, char **result_out, size_t *result_len_out);

/* configuration: ABI 0.1.0 only (0.2.x reads buffers 6 and 7) */
PW_IMPORT(proxy_get_configuration) pw_status proxy_get_configuration(char **data_out, size_t *len_out);

/* buffers */
PW_IMPORT(proxy_get_buffer_bytes) pw_status proxy_get_buffer_bytes(
    uint32_t buffer, size_t start, size_t max_len, char **data_out, size_t *len_out);
PW_IMPORT(proxy_get_buffer_status) pw_status proxy_get_buffer_status(uint32_t buffer, size_t *len_out, uint32_t *flags_out);
PW_IMPORT(proxy_set_buffer_bytes) pw_status proxy_set_buffer_bytes(
    uint32_t buffer, size_t start, size_t len, const char *data, size_t data_len);

/* header / trailer / metadata maps */
PW_IMPORT(proxy_get_header_map_size) pw_status proxy_get_header_map_size(uint32_t map, size_t *size_out);
PW_IMPORT(proxy_get_header_map_pairs) pw_status proxy_get_header_map_pairs(uint32_t map, char **data_out, size_t *len_out);
PW_IMPORT(proxy_set_header_map_pairs) pw_status proxy_set_header_map_pairs(uint32_t map, const char *data, size_t len);
PW_IMPORT(proxy_get_header_map_value) pw_status proxy_get_header_map_value(
    uint32_t map, const char *key, size_t key_len, char **value_out, size_t *value_len_out);
PW_IMPORT(proxy_add_header_map_value) pw_status proxy_add_header_map_value(
    uint32_t map, const char *key, size_t key_len, const char *value, size_t value_len);
PW_IMPORT(proxy_replace_header_map_value) pw_status proxy_replace_header_map_value(
    uint32_t map, const char *key, size_t key_len, const char *value, size_t value_len);
PW_IMPORT(proxy_remove_header_map_value) pw_status proxy_remove_header_map_value(uint32_t map, const char *key, size_t key_len);

/* stream control */
PW_IMPORT(proxy_continue_stream) pw_status proxy_continue_stream(uint32_t stream);           /* 0.2.x */
PW_IMPORT(proxy_close_stream) pw_status proxy_close_stream(uint32_t stream);                 /* 0.2.x */
PW_IMPORT(proxy_continue_request) pw_status proxy_continue_request(void);                    /* 0.1.0 */
PW_IMPORT(proxy_continue_response) pw_status proxy_continue_response(void);                  /* 0.1.0 */
PW_IMPORT(proxy_clear_route_cache) pw_status proxy_clear_route_cache(void);                  /* 0.1.0 */
PW_IMPORT(proxy_send_local_response) pw_status proxy_send_local_response(
    uint32_t status_code, const char *details, size_t details_len, const char *body, size_t body_len,
    const char *header_pairs, size_t header_pairs_len, int32_t grpc_status);
PW_IMPORT(proxy_get_status) pw_status proxy_get_status(uint32_t *code_out, char **message_out, size_t *message_len_out);

/* HTTP and gRPC callouts */
PW_IMPORT(proxy_http_call) pw_status proxy_http_call(
    const char *upstream, size_t upstream_len, const char *header_pairs, size_t header_pairs_len,
    const char *body, size_t body_len, const char *trailer_pairs, size_t trailer_pairs_len,
    uint32_t timeout_ms, uint32_t *token_out);
PW_IMPORT(proxy_grpc_call) pw_status proxy_grpc_call(
    const char *upstream, size_t upstream_len, const char *service, size_t service_len,
    const char *method, size_t method_len, const char *metadata_pairs, size_t metadata_pairs_len,
    const char *message, size_t message_len, uint32_t timeout_ms, uint32_t *token_out);
PW_IMPORT(proxy_grpc_stream) pw_status proxy_grpc_stream(
    const char *upstream, size_t upstream_len, const char *service, size_t service_len,
    const char *method, size_t method_len, const char *metadata_pairs, size_t metadata_pairs_len,
    uint32_t *token_out);
PW_IMPORT(proxy_grpc_send) pw_status proxy_grpc_send(uint32_t token, const char *message, size_t message_len, uint32_t end_stream);
PW_IMPORT(proxy_grpc_cancel) pw_status proxy_grpc_cancel(uint32_t token);
PW_IMPORT(proxy_grpc_close) pw_status proxy_grpc_close(uint32_t token);

/* shared key/value store and queues */
PW_IMPORT(proxy_get_shared_data) pw_status proxy_get_shared_data(
    const char *key, size_t key_len, char **value_out, size_t *value_len_out, uint32_t *cas_out);
PW_IMPORT(proxy_set_shared_data) pw_status proxy_set_shared_data(
    const char *key, size_t key_len, const char *value, size_t value_len, uint32_t cas);
PW_IMPORT(proxy_register_shared_queue) pw_status proxy_register_shared_queue(const char *name, size_t name_len, uint32_t *queue_out);
PW_IMPORT(proxy_resolve_shared_queue) pw_status proxy_resolve_shared_queue(
    const char *vm_id, size_t vm_id_len, const char *name, size_t name_len, uint32_t *queue_out);
PW_IMPORT(proxy_enqueue_shared_queue) pw_status proxy_enqueue_shared_queue(uint32_t queue, const char *value, size_t value_len);
PW_IMPORT(proxy_dequeue_shared_queue) pw_status proxy_dequeue_shared_queue(uint32_t queue, char **value_out, size_t *value_len_out);

/* metrics */
PW_IMPORT(proxy_define_metric) pw_status proxy_define_metric(uint32_t type, const char *name, size_t name_len, uint32_t *id_out);
PW_IMPORT(proxy_increment_metric) pw_status proxy_increment_metric(uint32_t id, int64_t delta);
PW_IMPORT(proxy_record_metric) pw_status proxy_record_metric(uint32_t id, uint64_t value);
PW_IMPORT(proxy_get_metric) pw_status proxy_get_metric(uint32_t id, uint64_t *value_out);

/* properties (path components separated by a 0x00 byte) */
PW_IMPORT(proxy_get_property) pw_status proxy_get_property(const char *path, size_t path_len, char **value_out, size_t *value_len_out);
PW_IMPORT(proxy_set_property) pw_status proxy_set_property(const char *path, size_t path_len, const char *value, size_t value_len);

/* ---- helpers --------------------------------------------------------------------------- */

static inline pw_status pw_log(uint32_t level, const char *msg) { return proxy_log(level, msg, strlen(msg)); }

/* printf-style log line, truncated at 1 KiB */
__attribute__((format(printf, 2, 3))) static inline pw_status pw_logf(uint32_t level, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  return proxy_log(level, line, (size_t)n);
}

/* A host-returned value copied into a NUL-terminated heap string (NULL when status != OK). */
typedef struct {
  pw_status status;
  char *data; /* NUL-terminated copy, or NULL */
  size_t len;
} pw_value;

static inline pw_value pw_take(pw_status status, char *raw, size_t len) {
  pw_value v = {status, NULL, 0};
  if (status == PW_OK) {
    v.data = malloc(len + 1);
    if (len && raw) memcpy(v.data, raw, len);
    v.data[len] = 0;
    v.len = len;
  }
  free(raw);
  return v;
}

static inline void pw_value_free(pw_value *v) { free(v->data); v->data = NULL; v->len = 0; }

static inline pw_value pw_get_header(uint32_t map, const char *key) {
  char *raw = NULL;
  size_t len = 0;
  pw_status s = proxy_get_header_map_value(map, key, strlen(key), &raw, &len);
  return pw_take(s, raw, len);
}

static inline pw_status pw_add_header(uint32_t map, const char *key, const char *value) {
  return proxy_add_header_map_value(map, key, strlen(key), value, strlen(value));
}

static inline pw_status pw_replace_header(uint32_t map, const char *key, const char *value) {
  return proxy_replace_header_map_value(map, key, strlen(key), value, strlen(value));
}

static inline pw_status pw_remove_header(uint32_t map, const char *key) {
  return proxy_remove_header_map_value(map, key, strlen(key));
}

static inline pw_value pw_get_buffer(uint32_t buffer, size_t start, size_t max_len) {
  char *raw = NULL;
  size_t len = 0;
  pw_status s = proxy_get_buffer_bytes(buffer, start, max_len, &raw, &len);
  return pw_take(s, raw, len);
}

/* path is a NUL-separated component list; pass its full byte length */
static inline pw_value pw_get_property(const char *path, size_t path_len) {
  char *raw = NULL;
  size_t len = 0;
  pw_status s = proxy_get_property(path, path_len, &raw, &len);
  return pw_take(s, raw, len);
}

/* ---- pairs encoding: u32 n, n x (u32 key_len, u32 value_len), n x (key 0x00 value 0x00) ---- */

typedef struct {
  const char *key;
  size_t key_len;
  const char *value;
  size_t value_len;
} pw_pair;

static inline uint32_t pw_read_u32(const char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Decode up to max pairs pointing into data; returns the pair count or -1 if malformed. */
static inline int pw_pairs_decode(const char *data, size_t len, pw_pair *out, int max) {
  if (len == 0) return 0;
  if (len < 4) return -1;
  uint32_t n = pw_read_u32(data);
  if ((size_t)n > (len - 4) / 8) return -1;
  size_t text = 4 + 8 * (size_t)n;
  int count = 0;
  for (uint32_t i = 0; i < n; i++) {
    size_t kl = pw_read_u32(data + 4 + 8 * i), vl = pw_read_u32(data + 8 + 8 * i);
    if (text + kl + vl + 2 > len) return -1;
    if (count < max) {
      out[count].key = data + text;
      out[count].key_len = kl;
      out[count].value = data + text + kl + 1;
      out[count].value_len = vl;
      count++;
    }
    text += kl + vl + 2;
  }
  return count;
}

/* Number of pairs in a blob, or -1 when it is malformed. */
static inline int pw_pairs_count(const char *data, size_t len) {
  if (pw_pairs_decode(data, len, NULL, 0) < 0) return -1;
  return len ? (int)pw_read_u32(data) : 0;
}

/* Encode pairs into a malloc'd blob; *len_out receives its size. */
static inline char *pw_pairs_encode(const pw_pair *pairs, int n, size_t *len_out) {
  size_t size = 4 + 8 * (size_t)n;
  for (int i = 0; i < n; i++) size += pairs[i].key_len + pairs[i].value_len + 2;
  char *blob = malloc(size), *p = blob + 4 + 8 * (size_t)n;
  uint32_t n32 = (uint32_t)n;
  memcpy(blob, &n32, 4);
  for (int i = 0; i < n; i++) {
    uint32_t kl = (uint32_t)pairs[i].key_len, vl = (uint32_t)pairs[i].value_len;
    memcpy(blob + 4 + 8 * i, &kl, 4);
    memcpy(blob + 8 + 8 * i, &vl, 4);
    memcpy(p, pairs[i].key, kl); p += kl; *p++ = 0;
    memcpy(p, pairs[i].value, vl); p += vl; *p++ = 0;
  }
  *len_out = size;
  return blob;
}

static inline pw_pair pw_pair_of(const char *key, const char *value) {
  pw_pair p = {key, strlen(key), value, strlen(value)};
  return p;
}

/* ---- context table: which contexts are roots, and the root of each stream ----------------- */

#define PW_MAX_CONTEXTS 1024
static uint32_t pw_ctx_ids[PW_MAX_CONTEXTS];
static uint32_t pw_ctx_parents[PW_MAX_CONTEXTS];

/* Remember a context; call from proxy_on_context_create. Returns its slot or -1 when full. */
static inline int pw_ctx_add(uint32_t id, uint32_t parent) {
  for (int i = 0; i < PW_MAX_CONTEXTS; i++) {
    if (pw_ctx_ids[i] == 0 || pw_ctx_ids[i] == id) {
      pw_ctx_ids[i] = id;
      pw_ctx_parents[i] = parent;
      return i;
    }
  }
  return -1;
}

static inline int pw_ctx_slot(uint32_t id) {
  for (int i = 0; i < PW_MAX_CONTEXTS; i++)
    if (pw_ctx_ids[i] == id) return i;
  return -1;
}

/* The root context of id (id itself for roots and unknown ids). */
static inline uint32_t pw_ctx_root(uint32_t id) {
  int slot = pw_ctx_slot(id);
  return (slot < 0 || pw_ctx_parents[slot] == 0) ? id : pw_ctx_parents[slot];
}

static inline int pw_ctx_is_root(uint32_t id) {
  int slot = pw_ctx_slot(id);
  return slot >= 0 && pw_ctx_parents[slot] == 0;
}

static inline void pw_ctx_remove(uint32_t id) {
  int slot = pw_ctx_slot(id);
  if (slot >= 0) { pw_ctx_ids[slot] = 0; pw_ctx_parents[slot] = 0; }
}

/* Copy a buffer-type configuration (6 or 7) into a NUL-terminated string ("" when absent). */
static inline char *pw_read_config(uint32_t buffer, size_t size) {
  pw_value v = pw_get_buffer(buffer, 0, size);
  if (v.status != PW_OK || v.data == NULL) {
    pw_value_free(&v);
    char *empty = malloc(1);
    empty[0] = 0;
    return empty;
  }
  return v.data;
}

#endif
