/*
 * lifecycle: logs every context callback (ABI 0.2.1).
 *
 * VM configuration: "reject" makes on_vm_start return false; anything else is accepted.
 * Plugin configuration: "invalid" makes proxy_validate_configuration return false; "reject"
 * makes on_configure return false; anything else is accepted.
 * Exports both allocators: malloc and proxy_on_memory_allocate (a wrapper around malloc that
 * logs nothing).
 *
 * Every callback logs one INFO line "lifecycle: <callback> <key=value ...>" and, unless stated,
 * returns Continue / true:
 *   on_context_create ctx=<id> parent=<parent>
 *   on_vm_start root=<id> size=<vm config size> vm_config=<text>   (false for "reject")
 *   validate_configuration root=<id> config=<text>                 (false for "invalid")
 *   on_configure root=<id> size=<size> config=<text>               (false for "reject")
 *   on_request_headers ctx=<id> n=<n> eos=<0|1>
 *   on_request_body ctx=<id> size=<size> eos=<0|1>
 *   on_request_trailers ctx=<id> n=<n>
 *   on_request_metadata ctx=<id> n=<n>
 *   on_response_headers ctx=<id> n=<n> eos=<0|1>
 *   on_response_body ctx=<id> size=<size> eos=<0|1>
 *   on_response_trailers ctx=<id> n=<n>
 *   on_response_metadata ctx=<id> n=<n>
 *   on_log ctx=<id>
 *   on_done ctx=<id> root=<0|1>
 *   on_delete ctx=<id>
 * Root contexts: on_done returns false (the plugin is not finished yet) and sets a 1 ms tick;
 * the next on_tick on that root calls proxy_done() and logs
 * "lifecycle: proxy_done root=<id> status=<status>", then sets the tick period to 0. So a host
 * shutting a root down must keep delivering ticks to it until proxy_done, then call on_delete.
 * Stream contexts: on_done returns true.
 * Covers: proxy_on_context_create, proxy_on_vm_start, proxy_validate_configuration,
 * proxy_on_configure, every HTTP stream callback incl. metadata, proxy_on_log, proxy_on_done,
 * proxy_on_delete, proxy_done, buffers 6/7, proxy_on_memory_allocate.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_PENDING 16
static uint32_t pending_done[MAX_PENDING];

PW_EXPORT(proxy_on_memory_allocate) void *on_memory_allocate(size_t size) { return malloc(size); }

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) {
  pw_ctx_add(ctx, parent);
  pw_logf(PW_LOG_INFO, "lifecycle: on_context_create ctx=%u parent=%u", ctx, parent);
}

PW_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_VM_CONFIGURATION, size);
  pw_logf(PW_LOG_INFO, "lifecycle: on_vm_start root=%u size=%u vm_config=%s", root, size, config);
  uint32_t ok = strcmp(config, "reject") != 0;
  free(config);
  return ok;
}

PW_EXPORT(proxy_validate_configuration) uint32_t validate_configuration(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  pw_logf(PW_LOG_INFO, "lifecycle: validate_configuration root=%u config=%s", root, config);
  uint32_t ok = strcmp(config, "invalid") != 0;
  free(config);
  return ok;
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  pw_logf(PW_LOG_INFO, "lifecycle: on_configure root=%u size=%u config=%s", root, size, config);
  uint32_t ok = strcmp(config, "reject") != 0;
  free(config);
  return ok;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_request_headers ctx=%u n=%u eos=%u", ctx, n, eos);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_body) uint32_t on_request_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_request_body ctx=%u size=%u eos=%u", ctx, size, eos);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_trailers) uint32_t on_request_trailers(uint32_t ctx, uint32_t n) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_request_trailers ctx=%u n=%u", ctx, n);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_request_metadata) uint32_t on_request_metadata(uint32_t ctx, uint32_t n) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_request_metadata ctx=%u n=%u", ctx, n);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_response_headers ctx=%u n=%u eos=%u", ctx, n, eos);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_response_body ctx=%u size=%u eos=%u", ctx, size, eos);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_trailers) uint32_t on_response_trailers(uint32_t ctx, uint32_t n) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_response_trailers ctx=%u n=%u", ctx, n);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_metadata) uint32_t on_response_metadata(uint32_t ctx, uint32_t n) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_response_metadata ctx=%u n=%u", ctx, n);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_log) void on_log(uint32_t ctx) { pw_logf(PW_LOG_INFO, "lifecycle: on_log ctx=%u", ctx); }

PW_EXPORT(proxy_on_done) uint32_t on_done(uint32_t ctx) {
  int root = pw_ctx_is_root(ctx);
  pw_logf(PW_LOG_INFO, "lifecycle: on_done ctx=%u root=%d", ctx, root);
  if (!root) return 1;
  for (int i = 0; i < MAX_PENDING; i++) {
    if (pending_done[i] == 0 || pending_done[i] == ctx) {
      pending_done[i] = ctx;
      proxy_set_tick_period_milliseconds(1);
      return 0;
    }
  }
  return 1;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
  for (int i = 0; i < MAX_PENDING; i++) {
    if (pending_done[i] == root) {
      pending_done[i] = 0;
      proxy_set_tick_period_milliseconds(0);
      pw_status s = proxy_done();
      pw_logf(PW_LOG_INFO, "lifecycle: proxy_done root=%u status=%u", root, s);
      return;
    }
  }
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  pw_logf(PW_LOG_INFO, "lifecycle: on_delete ctx=%u", ctx);
  pw_ctx_remove(ctx);
}
