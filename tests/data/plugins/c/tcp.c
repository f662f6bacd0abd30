/*
 * tcp: network (L4) filter (ABI 0.2.1).
 *
 * No configuration.
 * proxy_on_new_connection(ctx): logs INFO "tcp: new_connection ctx=<ctx>"; Continue.
 * proxy_on_downstream_data(ctx, size, eos): reads DOWNSTREAM_DATA (0..size); logs INFO
 *   "tcp: downstream_data ctx=<ctx> size=<size> eos=<0|1> status_size=<get_buffer_status size>";
 *   if the data contains "CLOSE": proxy_close_stream(DOWNSTREAM), logs INFO
 *   "tcp: close_stream status=<status>" and returns Continue with data unchanged;
 *   otherwise replaces the data with its ASCII upper-case version
 *   (proxy_set_buffer_bytes(DOWNSTREAM_DATA, 0, size, upper)); Continue.
 *   The upstream server therefore receives the client's bytes upper-cased.
 * proxy_on_upstream_data(ctx, size, eos): logs INFO "tcp: upstream_data ctx=<ctx> size=<size>
 *   eos=<0|1>"; when size > 0 prepends "[wasm]" to the chunk
 *   (proxy_set_buffer_bytes(UPSTREAM_DATA, 0, 0, "[wasm]")); Continue.
 *   The client therefore receives every non-empty upstream chunk prefixed with "[wasm]".
 * proxy_on_downstream_connection_close(ctx, peer) / proxy_on_upstream_connection_close(ctx,
 *   peer): log INFO "tcp: downstream_close ctx=<ctx> peer=<peer>" / "tcp: upstream_close ...".
 * proxy_on_done / proxy_on_log / proxy_on_delete: log "tcp: done ctx=<ctx>", "tcp: log
 *   ctx=<ctx>", "tcp: delete ctx=<ctx>"; on_done returns true.
 * Covers: proxy_on_new_connection, proxy_on_downstream/upstream_data,
 * proxy_on_downstream/upstream_connection_close, buffers 2/3, proxy_close_stream(DOWNSTREAM).
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

PW_EXPORT(proxy_on_new_connection) uint32_t on_new_connection(uint32_t ctx) {
  pw_logf(PW_LOG_INFO, "tcp: new_connection ctx=%u", ctx);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_downstream_data) uint32_t on_downstream_data(uint32_t ctx, uint32_t size, uint32_t eos) {
  size_t status_size = 0;
  uint32_t flags = 0;
  proxy_get_buffer_status(PW_BUF_DOWNSTREAM_DATA, &status_size, &flags);
  pw_logf(PW_LOG_INFO, "tcp: downstream_data ctx=%u size=%u eos=%u status_size=%zu", ctx, size, eos, status_size);
  pw_value data = pw_get_buffer(PW_BUF_DOWNSTREAM_DATA, 0, size);
  if (data.status == PW_OK && data.len) {
    if (strstr(data.data, "CLOSE")) {
      pw_logf(PW_LOG_INFO, "tcp: close_stream status=%u", proxy_close_stream(PW_STREAM_DOWNSTREAM));
    } else {
      for (size_t i = 0; i < data.len; i++)
        if (data.data[i] >= 'a' && data.data[i] <= 'z') data.data[i] = (char)(data.data[i] - 'a' + 'A');
      proxy_set_buffer_bytes(PW_BUF_DOWNSTREAM_DATA, 0, size, data.data, data.len);
    }
  }
  pw_value_free(&data);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_upstream_data) uint32_t on_upstream_data(uint32_t ctx, uint32_t size, uint32_t eos) {
  pw_logf(PW_LOG_INFO, "tcp: upstream_data ctx=%u size=%u eos=%u", ctx, size, eos);
  if (size > 0) proxy_set_buffer_bytes(PW_BUF_UPSTREAM_DATA, 0, 0, "[wasm]", 6);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_downstream_connection_close) void on_downstream_close(uint32_t ctx, uint32_t peer) {
  pw_logf(PW_LOG_INFO, "tcp: downstream_close ctx=%u peer=%u", ctx, peer);
}

PW_EXPORT(proxy_on_upstream_connection_close) void on_upstream_close(uint32_t ctx, uint32_t peer) {
  pw_logf(PW_LOG_INFO, "tcp: upstream_close ctx=%u peer=%u", ctx, peer);
}

PW_EXPORT(proxy_on_done) uint32_t on_done(uint32_t ctx) {
  pw_logf(PW_LOG_INFO, "tcp: done ctx=%u", ctx);
  return 1;
}

PW_EXPORT(proxy_on_log) void on_log(uint32_t ctx) { pw_logf(PW_LOG_INFO, "tcp: log ctx=%u", ctx); }

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) { pw_logf(PW_LOG_INFO, "tcp: delete ctx=%u", ctx); }
