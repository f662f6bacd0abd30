/*
 * properties: reads and writes properties (ABI 0.2.1).
 *
 * Plugin configuration: newline-separated property paths written with '.' between components
 * (so a component cannot itself contain '.'); blank lines ignored. Empty configuration means
 * this default list:
 *   request.path request.url_path request.host request.scheme request.method request.protocol
 *   request.id request.time request.headers source.address source.port destination.address
 *   destination.port connection.id connection_id connection.mtls plugin_name plugin_root_id
 *   plugin_vm_id node.id xds.node.id xds.cluster_name cluster_name listener_direction
 *   xds.listener_direction
 * Each path is sent to proxy_get_property with components joined by one 0x00 byte and no
 * trailing 0x00.
 *
 * proxy_on_configure(root): reads plugin_name, plugin_root_id, plugin_vm_id on the root and
 *   logs INFO "properties: root plugin_name=<v> plugin_root_id=<v> plugin_vm_id=<v>" (each
 *   value is "status=<n>" when the read failed); returns true.
 * proxy_on_request_headers(ctx): for every configured path P, records an encoded result:
 *   "status=<n>" when the status is not OK; otherwise "text:<value>" when every byte is printable
 *   ASCII (0x20..0x7e) and the value is non-empty, else "hex:<lower-case hex of all bytes>"
 *   (an empty value is "hex:"). Values longer than 256 bytes are truncated to 256 before encoding.
 *   Then proxy_set_property("wasmesh.test" as components "wasmesh","test", value "hello") and
 *   proxy_get_property of the same path; and proxy_get_property("plugin_root_id" followed by a
 *   trailing 0x00). Continue.
 * proxy_on_response_headers: adds one response header per path: "x-prop-<P with '.' → '-'>:
 *   <encoded>", plus "x-prop-set-status: <status>", "x-prop-set-readback: <encoded>",
 *   "x-prop-trailing-nul: <encoded>"; Continue.
 * Covers: proxy_get_property, proxy_set_property.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_PATHS 48
#define MAX_STREAMS 64
#define VALUE_MAX 256

static const char DEFAULT_PATHS[] =
    "request.path\nrequest.url_path\nrequest.host\nrequest.scheme\nrequest.method\nrequest.protocol\n"
    "request.id\nrequest.time\nrequest.headers\nsource.address\nsource.port\ndestination.address\n"
    "destination.port\nconnection.id\nconnection_id\nconnection.mtls\nplugin_name\nplugin_root_id\n"
    "plugin_vm_id\nnode.id\nxds.node.id\nxds.cluster_name\ncluster_name\nlistener_direction\n"
    "xds.listener_direction";

static char *paths[MAX_PATHS];
static int path_count;

typedef struct {
  uint32_t ctx;
  char *encoded[MAX_PATHS];
  char *set_status, *readback, *trailing;
} stream_state;

static stream_state streams[MAX_STREAMS];

/* Encode a property read result as described in the header comment. */
static char *encode(pw_value v) {
  char *out;
  if (v.status != PW_OK) {
    out = malloc(24);
    snprintf(out, 24, "status=%u", v.status);
    return out;
  }
  size_t len = v.len > VALUE_MAX ? VALUE_MAX : v.len;
  int printable = len > 0;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)v.data[i] < 0x20 || (unsigned char)v.data[i] > 0x7e) printable = 0;
  out = malloc(2 * len + 8);
  if (printable) {
    memcpy(out, "text:", 5);
    memcpy(out + 5, v.data, len);
    out[5 + len] = 0;
  } else {
    memcpy(out, "hex:", 4);
    for (size_t i = 0; i < len; i++) snprintf(out + 4 + 2 * i, 3, "%02x", (unsigned char)v.data[i]);
    out[4 + 2 * len] = 0;
  }
  return out;
}

static pw_value read_dotted(const char *dotted) {
  char path[256];
  size_t len = strlen(dotted);
  if (len >= sizeof path) len = sizeof path - 1;
  for (size_t i = 0; i < len; i++) path[i] = dotted[i] == '.' ? 0 : dotted[i];
  return pw_get_property(path, len);
}

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  for (int i = 0; i < path_count; i++) free(paths[i]);
  path_count = 0;
  char *source = config[0] ? config : (char *)DEFAULT_PATHS;
  char *copy = strdup(source);
  for (char *line = strtok(copy, "\r\n"); line && path_count < MAX_PATHS; line = strtok(NULL, "\r\n"))
    if (line[0]) paths[path_count++] = strdup(line);
  free(copy);
  free(config);
  const char *names[3] = {"plugin_name", "plugin_root_id", "plugin_vm_id"};
  char *values[3];
  for (int i = 0; i < 3; i++) {
    pw_value v = pw_get_property(names[i], strlen(names[i]));
    if (v.status == PW_OK) values[i] = strdup(v.data);
    else { values[i] = malloc(24); snprintf(values[i], 24, "status=%u", v.status); }
    pw_value_free(&v);
  }
  pw_logf(PW_LOG_INFO, "properties: root plugin_name=%s plugin_root_id=%s plugin_vm_id=%s", values[0], values[1],
          values[2]);
  for (int i = 0; i < 3; i++) free(values[i]);
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

static void clear_stream(stream_state *st) {
  for (int i = 0; i < MAX_PATHS; i++) free(st->encoded[i]);
  free(st->set_status);
  free(st->readback);
  free(st->trailing);
  memset(st, 0, sizeof *st);
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 1);
  if (!st) return PW_CONTINUE;
  for (int i = 0; i < path_count; i++) {
    pw_value v = read_dotted(paths[i]);
    free(st->encoded[i]);
    st->encoded[i] = encode(v);
    pw_value_free(&v);
  }
  static const char SET_PATH[] = "wasmesh\0test";
  pw_status s = proxy_set_property(SET_PATH, sizeof SET_PATH - 1, "hello", 5);
  free(st->set_status);
  st->set_status = malloc(16);
  snprintf(st->set_status, 16, "%u", s);
  pw_value back = pw_get_property(SET_PATH, sizeof SET_PATH - 1);
  free(st->readback);
  st->readback = encode(back);
  pw_value_free(&back);
  static const char NUL_PATH[] = "plugin_root_id\0";
  pw_value trailing = pw_get_property(NUL_PATH, sizeof NUL_PATH - 1);
  free(st->trailing);
  st->trailing = encode(trailing);
  pw_value_free(&trailing);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 0);
  if (!st) return PW_CONTINUE;
  for (int i = 0; i < path_count; i++) {
    if (!st->encoded[i]) continue;
    char name[300];
    snprintf(name, sizeof name, "x-prop-%s", paths[i]);
    for (char *c = name; *c; c++)
      if (*c == '.') *c = '-';
    pw_add_header(PW_MAP_RESPONSE_HEADERS, name, st->encoded[i]);
  }
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-prop-set-status", st->set_status ? st->set_status : "");
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-prop-set-readback", st->readback ? st->readback : "");
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-prop-trailing-nul", st->trailing ? st->trailing : "");
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  stream_state *st = stream_for(ctx, 0);
  if (st) clear_stream(st);
  pw_ctx_remove(ctx);
}
