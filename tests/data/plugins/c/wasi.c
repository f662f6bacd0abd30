/*
 * wasi: exercises WASI through wasi-libc (ABI 0.2.1).
 *
 * No configuration. Environment variable read: WASMESH_TEST_ENV (hosts pass it through the
 * VM's configured environment variables).
 * proxy_on_vm_start: printf("wasi: stdout from vm_start\n") + fflush(stdout), and
 *   fprintf(stderr, "wasi: stderr from vm_start\n"); returns true. (cpp-host/Envoy map fd 1 to
 *   an INFO log and fd 2 to an ERROR log with the trailing newline stripped.)
 * proxy_on_request_headers(ctx): printf("wasi: stdout ctx=<ctx>\n") + fflush; Continue.
 * proxy_on_response_headers: adds response headers
 *   "x-wasi-env: <value of WASMESH_TEST_ENV>" or "<unset>",
 *   "x-wasi-env-count: <number of entries in environ>",
 *   "x-wasi-realtime-ns: <clock_gettime(CLOCK_REALTIME) in ns>" (or "error=<errno>"),
 *   "x-wasi-monotonic-ns: <clock_gettime(CLOCK_MONOTONIC) in ns>" (or "error=<errno>"),
 *   "x-wasi-entropy: <32 hex chars from getentropy(16 bytes)>" (or "error=<errno>"),
 *   "x-wasi-random: <8 hex chars from arc4random()>"; Continue.
 * Covers WASI: fd_write, fd_fdstat_get, fd_seek/fd_close (linked by stdio), environ_sizes_get,
 * environ_get, clock_time_get, random_get.
 */
#include "proxy_wasm.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

PW_ABI_0_2_1

extern char **environ;

PW_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) {
  printf("wasi: stdout from vm_start\n");
  fflush(stdout);
  fprintf(stderr, "wasi: stderr from vm_start\n");
  return 1;
}

PW_EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  printf("wasi: stdout ctx=%u\n", ctx);
  fflush(stdout);
  return PW_CONTINUE;
}

static void add_clock(const char *name, clockid_t clock) {
  struct timespec ts;
  char value[48];
  if (clock_gettime(clock, &ts) == 0)
    snprintf(value, sizeof value, "%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  else
    snprintf(value, sizeof value, "error=%d", errno);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, name, value);
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  const char *env = getenv("WASMESH_TEST_ENV");
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-wasi-env", env ? env : "<unset>");
  int count = 0;
  for (char **e = environ; e && *e; e++) count++;
  char value[48];
  snprintf(value, sizeof value, "%d", count);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-wasi-env-count", value);
  add_clock("x-wasi-realtime-ns", CLOCK_REALTIME);
  add_clock("x-wasi-monotonic-ns", CLOCK_MONOTONIC);
  unsigned char bytes[16];
  if (getentropy(bytes, sizeof bytes) == 0) {
    for (int i = 0; i < 16; i++) snprintf(value + 2 * i, 3, "%02x", bytes[i]);
  } else {
    snprintf(value, sizeof value, "error=%d", errno);
  }
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-wasi-entropy", value);
  snprintf(value, sizeof value, "%08x", (unsigned)arc4random());
  pw_add_header(PW_MAP_RESPONSE_HEADERS, "x-wasi-random", value);
  return PW_CONTINUE;
}
