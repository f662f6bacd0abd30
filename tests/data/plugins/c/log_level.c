/*
 * log_level: host log level and log levels (ABI 0.2.1).
 *
 * No configuration.
 * proxy_on_request_headers(ctx): proxy_get_log_level(&level) (remembers status and level); logs
 *   "log_level: message at level <L>" at each level L = 0..5 (TRACE..CRITICAL); calls
 *   proxy_log(6, "log_level: invalid level", ...) and remembers its status (BAD_ARGUMENT = 2
 *   expected); Continue.
 * proxy_on_response_headers: adds "x-log-level: <level>", "x-log-level-status: <status>",
 *   "x-log-invalid-level-status: <status>"; Continue.
 * Covers: proxy_get_log_level, proxy_log at every level.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

static uint32_t last_level;
static pw_status level_status, invalid_status;

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  last_level = 0;
  level_status = proxy_get_log_level(&last_level);
  for (uint32_t level = PW_LOG_TRACE; level <= PW_LOG_CRITICAL; level++) pw_logf(level, "log_level: message at level %u", level);
  invalid_status = pw_log(6, "log_level: invalid level");
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  char number[16];
  snprintf(number, sizeof number, "%u", last_level);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-log-level", number);
  snprintf(number, sizeof number, "%u", level_status);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-log-level-status", number);
  snprintf(number, sizeof number, "%u", invalid_status);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-log-invalid-level-status", number);
  return PW_CONTINUE;
}
