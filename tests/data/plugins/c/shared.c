/*
 * shared: shared key/value data and shared queues (ABI 0.2.1).
 *
 * No configuration.
 * proxy_on_configure(root): proxy_register_shared_queue("wasmesh_queue") and logs INFO
 *   "shared: registered queue=<id> status=<status>"; returns true.
 * proxy_on_request_headers(ctx):
 *   - counter: loop (at most 10 attempts): proxy_get_shared_data("shared_requests") → decimal
 *     text value + cas (NOT_FOUND → 0, cas 0); proxy_set_shared_data(key, value+1 as decimal,
 *     cas); retry on CAS_MISMATCH. Remembers the new value and the number of CAS retries;
 *   - stale CAS: reads the key again (cas C), then proxy_set_shared_data("shared_requests",
 *     <same new value>, C + 1) and remembers its status (CAS_MISMATCH = 8 expected);
 *   - queue: proxy_resolve_shared_queue(vm_id "", "wasmesh_queue") then
 *     proxy_enqueue_shared_queue(id, <request :path>); proxy_resolve_shared_queue("",
 *     "no_such_queue") (NOT_FOUND = 1 expected); proxy_dequeue_shared_queue on the
 *     unregistered id 0xfffffff0 (NOT_FOUND expected); remembers the statuses;
 *   - returns Continue.
 * proxy_on_response_headers: adds "x-shared-count: <new counter value>",
 *   "x-shared-cas-retries: <retries>", "x-shared-stale-cas-status: <status>",
 *   "x-queue-resolve-status", "x-queue-enqueue-status", "x-queue-missing-status",
 *   "x-queue-bad-dequeue-status" (statuses as decimal); Continue.
 * proxy_on_queue_ready(root, queue): dequeues until the queue reports non-OK; logs INFO
 *   "shared: queue_ready queue=<id> item=<bytes>" per item and then
 *   "shared: queue_drained queue=<id> status=<last status>" (7 = EMPTY expected).
 * Covers: proxy_get/set_shared_data (incl. CAS), proxy_register/resolve/enqueue/dequeue_shared_queue,
 * proxy_on_queue_ready.
 */
#include "proxy_wasm.h"

PW_ABI_0_2_1

#define MAX_STREAMS 256
static const char KEY[] = "shared_requests";
static const char QUEUE[] = "wasmesh_queue";

typedef struct {
  uint32_t ctx;
  unsigned long count;
  int retries;
  pw_status stale, resolve, enqueue, missing, bad_dequeue;
} stream_state;

static stream_state streams[MAX_STREAMS];

PW_EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t parent) { pw_ctx_add(ctx, parent); }

PW_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
  uint32_t queue = 0;
  pw_status s = proxy_register_shared_queue(QUEUE, strlen(QUEUE), &queue);
  pw_logf(PW_LOG_INFO, "shared: registered queue=%u status=%u", queue, s);
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
  unsigned long next = 0;
  char text[32];
  for (int attempt = 0; attempt < 10; attempt++) {
    char *raw = NULL;
    size_t len = 0;
    uint32_t cas = 0;
    pw_value v = pw_take(proxy_get_shared_data(KEY, strlen(KEY), &raw, &len, &cas), raw, len);
    unsigned long current = v.status == PW_OK ? strtoul(v.data, NULL, 10) : 0;
    if (v.status != PW_OK) cas = 0;
    pw_value_free(&v);
    next = current + 1;
    snprintf(text, sizeof text, "%lu", next);
    pw_status s = proxy_set_shared_data(KEY, strlen(KEY), text, strlen(text), cas);
    if (s == PW_OK) break;
    if (s != PW_CAS_MISMATCH) break;
    st->retries++;
  }
  st->count = next;
  {
    char *raw = NULL;
    size_t len = 0;
    uint32_t cas = 0;
    proxy_get_shared_data(KEY, strlen(KEY), &raw, &len, &cas);
    free(raw);
    st->stale = proxy_set_shared_data(KEY, strlen(KEY), text, strlen(text), cas + 1 ? cas + 1 : 2);
  }
  uint32_t queue = 0;
  st->resolve = proxy_resolve_shared_queue("", 0, QUEUE, strlen(QUEUE), &queue);
  pw_value path = pw_get_header(PW_MAP_REQUEST_HEADERS, ":path");
  st->enqueue = st->resolve == PW_OK ? proxy_enqueue_shared_queue(queue, path.data ? path.data : "", path.len) : st->resolve;
  pw_value_free(&path);
  uint32_t missing = 0;
  st->missing = proxy_resolve_shared_queue("", 0, "no_such_queue", 13, &missing);
  char *raw = NULL;
  size_t len = 0;
  st->bad_dequeue = proxy_dequeue_shared_queue(0xfffffff0u, &raw, &len);
  free(raw);
  return PW_CONTINUE;
}

static void add_number(const char *name, unsigned long value) {
  char number[32];
  snprintf(number, sizeof number, "%lu", value);
  pw_add_header(PW_MAP_RESPONSE_HEADERS, name, number);
}

PW_EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
  stream_state *st = stream_for(ctx, 0);
  if (!st) return PW_CONTINUE;
  add_number("x-shared-count", st->count);
  add_number("x-shared-cas-retries", (unsigned long)st->retries);
  add_number("x-shared-stale-cas-status", st->stale);
  add_number("x-queue-resolve-status", st->resolve);
  add_number("x-queue-enqueue-status", st->enqueue);
  add_number("x-queue-missing-status", st->missing);
  add_number("x-queue-bad-dequeue-status", st->bad_dequeue);
  return PW_CONTINUE;
}

PW_EXPORT(proxy_on_queue_ready) void on_queue_ready(uint32_t root, uint32_t queue) {
  pw_status s;
  for (;;) {
    char *raw = NULL;
    size_t len = 0;
    s = proxy_dequeue_shared_queue(queue, &raw, &len);
    pw_value item = pw_take(s, raw, len);
    if (s != PW_OK) break;
    pw_logf(PW_LOG_INFO, "shared: queue_ready queue=%u item=%s", queue, item.data);
    pw_value_free(&item);
  }
  pw_logf(PW_LOG_INFO, "shared: queue_drained queue=%u status=%u", queue, s);
}

PW_EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {
  stream_state *st = stream_for(ctx, 0);
  if (st) memset(st, 0, sizeof *st);
  pw_ctx_remove(ctx);
}
