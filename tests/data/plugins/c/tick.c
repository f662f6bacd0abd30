/*
 * tick: timers (ABI 0.2.1).
 *
 * Plugin configuration: "<period_ms>[,<max_ticks>]" in decimal; empty means "100,0".
 * max_ticks 0 means unlimited. A malformed configuration (non-digits) is rejected: on_configure
 * logs ERROR "tick: bad configuration" and returns false.
 *
 * proxy_on_configure(root): proxy_set_tick_period_milliseconds(period_ms); logs INFO
 *   "tick: period=<ms> max=<n> status=<status>"; returns true.
 * proxy_on_tick(root): increments the shared-data key "tick_count" (decimal text, read-modify-
 *   write with CAS, retried up to 10 times), reads proxy_get_current_time_nanoseconds, and logs
 *   INFO "tick: on_tick root=<root> count=<shared count> local=<ticks seen by this root>".
 *   When local reaches max_ticks (> 0): proxy_set_tick_period_milliseconds(0) and logs INFO
 *   "tick: stopped root=<root> after=<local>"; no further ticks are expected for this root.
 * proxy_on_response_headers: adds "x-tick-count: <shared tick_count, 0 if unset>" and
 *   "x-now-ns: <proxy_get_current_time_nanoseconds as decimal>"; Continue.
 * Covers: proxy_set_tick_period_milliseconds, proxy_on_tick, proxy_get_current_time_nanoseconds.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_ROOTS 16
static uint32_t roots[MAX_ROOTS];
static unsigned long max_ticks[MAX_ROOTS];
static unsigned long seen[MAX_ROOTS];
static const char KEY[] = "tick_count";

static int root_slot(uint32_t root) {
  for (int i = 0; i < MAX_ROOTS; i++)
    if (roots[i] == root) return i;
  for (int i = 0; i < MAX_ROOTS; i++)
    if (roots[i] == 0) { roots[i] = root; return i; }
  return -1;
}

static int parse_number(const char *s, const char *end, unsigned long *out) {
  if (s == end) return 0;
  unsigned long v = 0;
  for (; s < end; s++) {
    if (*s < '0' || *s > '9') return 0;
    v = v * 10 + (unsigned long)(*s - '0');
  }
  *out = v;
  return 1;
}

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  char *config = pw_read_config(PW_BUF_PLUGIN_CONFIGURATION, size);
  unsigned long period = 100, max = 0;
  int ok = 1;
  if (config[0]) {
    char *comma = strchr(config, ',');
    char *end = config + strlen(config);
    ok = parse_number(config, comma ? comma : end, &period) && (!comma || parse_number(comma + 1, end, &max));
  }
  free(config);
  int slot = root_slot(root);
  if (!ok || slot < 0) {
    pw_log(PW_LOG_ERROR, "tick: bad configuration");
    return 0;
  }
  max_ticks[slot] = max;
  seen[slot] = 0;
  pw_status s = proxy_set_tick_period_milliseconds((uint32_t)period);
  pw_logf(PW_LOG_INFO, "tick: period=%lu max=%lu status=%u", period, max, s);
  return 1;
}

static unsigned long read_count(uint32_t *cas) {
  char *raw = NULL;
  size_t len = 0;
  pw_value v = pw_take(proxy_get_shared_data(KEY, strlen(KEY), &raw, &len, cas), raw, len);
  unsigned long count = v.status == PW_OK ? strtoul(v.data, NULL, 10) : 0;
  if (v.status != PW_OK) *cas = 0;
  pw_value_free(&v);
  return count;
}

PW_EXPORT(proxy_on_tick) void on_tick(uint32_t root) {
  unsigned long count = 0;
  for (int attempt = 0; attempt < 10; attempt++) {
    uint32_t cas = 0;
    count = read_count(&cas) + 1;
    char text[32];
    snprintf(text, sizeof text, "%lu", count);
    if (proxy_set_shared_data(KEY, strlen(KEY), text, strlen(text), cas) != PW_CAS_MISMATCH) break;
  }
  uint64_t now = 0;
  proxy_get_current_time_nanoseconds(&now);
  int slot = root_slot(root);
  unsigned long local = slot >= 0 ? ++seen[slot] : 0;
  pw_logf(PW_LOG_INFO, "tick: on_tick root=%u count=%lu local=%lu", root, count, local);
  if (slot >= 0 && max_ticks[slot] && local >= max_ticks[slot]) {
    proxy_set_tick_period_milliseconds(0);
    pw_logf(PW_LOG_INFO, "tick: stopped root=%u after=%lu", root, local);
  }
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  uint32_t cas = 0;
  char number[32];
  snprintf(number, sizeof number, "%lu", read_count(&cas));
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-tick-count", number);
  uint64_t now = 0;
  proxy_get_current_time_nanoseconds(&now);
  snprintf(number, sizeof number, "%llu", (unsigned long long)now);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-now-ns", number);
  return PW_CONTINUE;
}
