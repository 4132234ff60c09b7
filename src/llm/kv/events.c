/* kv_events.c - the wire format of KV event batches (see dynamo/llm/kv.h).
 *
 * Each engine worker publishes its cache changes on the pub/sub bus, where
 * payloads are opaque bytes, and every router decodes them. Written by hand
 * rather than as JSON because a busy worker emits tens of thousands of
 * blocks a second and each is two fixed 64-bit integers: the binary form is
 * 16 bytes a block, needs no parser, and is easy to validate completely.
 * The decoder trusts nothing: it checks the whole batch before delivering a
 * single event, so a corrupt payload never half-applies to an indexer.
 */
#include "llm/kv/encode.h"
#include "dynamo/llm/kv.h"

#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"
#include "common/buf.h"

#define KV_MAGIC0 'K'
#define KV_MAGIC1 'V'
#define KV_EV_HAS_PARENT 0x01u

/* ---- little-endian integers -------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* ---- encoding ----------------------------------------------------------- */

/* The count an event carries on the wire. */
static size_t event_count(const dyn_kv_event_t *e) {
  if (e->kind == DYN_KV_STORED) return e->n_blocks;
  if (e->kind == DYN_KV_REMOVED) return e->n_removed;
  return 0;
}

static size_t event_size(const dyn_kv_event_t *e) {
  size_t n = DYN_KV_WIRE_EVENT;
  if (e->kind == DYN_KV_STORED) n += (e->has_parent ? 8 : 0) + 16 * e->n_blocks;
  if (e->kind == DYN_KV_REMOVED) n += 8 * e->n_removed;
  return n;
}

size_t dyn_kv_encoded_size(const dyn_kv_event_t *events, size_t n_events) {
  size_t n = DYN_KV_WIRE_HEADER;
  for (size_t i = 0; events && i < n_events; i++) n += event_size(&events[i]);
  return n;
}

static int event_valid(const dyn_kv_event_t *e) {
  if (e->kind != DYN_KV_STORED && e->kind != DYN_KV_REMOVED && e->kind != DYN_KV_CLEARED)
    return 0;
  size_t count = event_count(e);
  if (count > UINT32_MAX) return 0;
  if (e->kind == DYN_KV_STORED && count && !e->blocks) return 0;
  if (e->kind == DYN_KV_REMOVED && count && !e->removed) return 0;
  return 1;
}

static uint8_t *encode_event(uint8_t *p, const dyn_kv_event_t *e) {
  int parent = e->kind == DYN_KV_STORED && e->has_parent;
  p[0] = (uint8_t)e->kind;
  p[1] = parent ? KV_EV_HAS_PARENT : 0;
  put_u64(p + 2, e->event_id);
  put_u32(p + 10, (uint32_t)event_count(e));
  p += DYN_KV_WIRE_EVENT;
  if (parent) {
    put_u64(p, e->parent_seq_hash);
    p += 8;
  }
  if (e->kind == DYN_KV_STORED) {
    for (size_t i = 0; i < e->n_blocks; i++, p += 16) {
      put_u64(p, e->blocks[i].seq_hash);
      put_u64(p + 8, e->blocks[i].local_hash);
    }
  } else if (e->kind == DYN_KV_REMOVED) {
    for (size_t i = 0; i < e->n_removed; i++, p += 8) put_u64(p, e->removed[i]);
  }
  return p;
}

int dyn__kv_encode(dyn__buf_t *out, uint64_t worker_id, const dyn_kv_event_t *events,
                  size_t n_events) {
  if (!out || (!events && n_events) || n_events > UINT32_MAX) return DYN_EINVAL;
  for (size_t i = 0; i < n_events; i++)
    if (!event_valid(&events[i])) return DYN_EINVAL;
  size_t total = dyn_kv_encoded_size(events, n_events);
  int rc = dyn__buf_reserve(out, total);
  if (rc) return rc;
  uint8_t *p = out->data + out->len;
  p[0] = KV_MAGIC0;
  p[1] = KV_MAGIC1;
  p[2] = DYN_KV_WIRE_VERSION;
  p[3] = 0;
  put_u64(p + 4, worker_id);
  put_u32(p + 12, (uint32_t)n_events);
  p += DYN_KV_WIRE_HEADER;
  for (size_t i = 0; i < n_events; i++) p = encode_event(p, &events[i]);
  out->len += total;
  return DYN_OK;
}

/* ---- decoding ----------------------------------------------------------- */

/* One event's fixed part, read and checked; body points at what follows. */
typedef struct wire_event {
  uint8_t kind, flags;
  uint64_t event_id;
  uint32_t count;
  const uint8_t *body;
  size_t body_len;
} wire_event_t;

/* Parses the event at p (left bytes remain); 0 or DYN_EPROTO with *why. */
static int parse_event(const uint8_t *p, size_t left, wire_event_t *w, const char **why) {
  if (left < DYN_KV_WIRE_EVENT) return *why = "KV event batch: truncated event header", DYN_EPROTO;
  w->kind = p[0];
  w->flags = p[1];
  w->event_id = get_u64(p + 2);
  w->count = get_u32(p + 10);
  left -= DYN_KV_WIRE_EVENT;
  w->body = p + DYN_KV_WIRE_EVENT;
  size_t unit;
  switch (w->kind) {
  case DYN_KV_STORED: unit = 16; break;
  case DYN_KV_REMOVED: unit = 8; break;
  case DYN_KV_CLEARED: unit = 0; break;
  default: return *why = "KV event batch: unknown event kind", DYN_EPROTO;
  }
  if (w->flags & ~KV_EV_HAS_PARENT)
    return *why = "KV event batch: unknown event flag bits", DYN_EPROTO;
  if ((w->flags & KV_EV_HAS_PARENT) && w->kind != DYN_KV_STORED)
    return *why = "KV event batch: has_parent set on an event that is not STORED", DYN_EPROTO;
  if (w->kind == DYN_KV_CLEARED && w->count)
    return *why = "KV event batch: CLEARED event with a non-zero count", DYN_EPROTO;
  size_t fixed = (w->flags & KV_EV_HAS_PARENT) ? 8 : 0;
  if (left < fixed || (unit && (left - fixed) / unit < w->count))
    return *why = "KV event batch: event count exceeds the bytes present", DYN_EPROTO;
  w->body_len = fixed + unit * w->count;
  return DYN_OK;
}

static int parse_header(const uint8_t *p, size_t len, uint64_t *worker, uint32_t *n_events,
                        const char **why) {
  if (len < DYN_KV_WIRE_HEADER) return *why = "KV event batch: shorter than its header", DYN_EPROTO;
  if (p[0] != KV_MAGIC0 || p[1] != KV_MAGIC1)
    return *why = "KV event batch: bad magic (not a KV event batch)", DYN_EPROTO;
  if (p[2] != DYN_KV_WIRE_VERSION)
    return *why = "KV event batch: unsupported version", DYN_EPROTO;
  if (p[3]) return *why = "KV event batch: non-zero header flags", DYN_EPROTO;
  *worker = get_u64(p + 4);
  *n_events = get_u32(p + 12);
  return DYN_OK;
}

/* Walks every event without delivering any; *max_count gets the largest. */
static int validate(const uint8_t *p, size_t len, uint32_t n_events, size_t *max_count,
                    const char **why) {
  size_t off = DYN_KV_WIRE_HEADER;
  *max_count = 0;
  for (uint32_t i = 0; i < n_events; i++) {
    wire_event_t w;
    int rc = parse_event(p + off, len - off, &w, why);
    if (rc) return rc;
    off += DYN_KV_WIRE_EVENT + w.body_len;
    if (w.count > *max_count) *max_count = w.count;
  }
  if (off != len) return *why = "KV event batch: trailing bytes after the last event", DYN_EPROTO;
  return DYN_OK;
}

/* Fills ev from a validated wire event, converting into the scratch
 * arrays (the wire bytes are neither aligned nor in host order). */
static void to_event(const wire_event_t *w, dyn_kv_block_t *blocks, dyn_kv_hash_t *hashes,
                     dyn_kv_event_t *ev) {
  memset(ev, 0, sizeof *ev);
  ev->kind = (dyn_kv_event_kind_t)w->kind;
  ev->event_id = w->event_id;
  const uint8_t *b = w->body;
  if (w->kind == DYN_KV_STORED) {
    if (w->flags & KV_EV_HAS_PARENT) {
      ev->has_parent = 1;
      ev->parent_seq_hash = get_u64(b);
      b += 8;
    }
    for (uint32_t i = 0; i < w->count; i++, b += 16) {
      blocks[i].seq_hash = get_u64(b);
      blocks[i].local_hash = get_u64(b + 8);
    }
    ev->blocks = blocks;
    ev->n_blocks = w->count;
  } else if (w->kind == DYN_KV_REMOVED) {
    for (uint32_t i = 0; i < w->count; i++, b += 8) hashes[i] = get_u64(b);
    ev->removed = hashes;
    ev->n_removed = w->count;
  }
}

int dyn_kv_decode(const void *data, size_t len, uint64_t *worker_id, dyn_kv_event_cb cb,
                  void *ud, const char **why) {
  const char *dummy;
  if (!why) why = &dummy;
  *why = NULL;
  if (!data && len) return *why = "KV event batch: NULL data", DYN_EINVAL;
  const uint8_t *p = data;
  uint64_t worker;
  uint32_t n_events;
  size_t max_count;
  int rc = parse_header(p, len, &worker, &n_events, why);
  if (!rc) rc = validate(p, len, n_events, &max_count, why);
  if (rc) return rc;
  if (worker_id) *worker_id = worker;
  if (!cb || !n_events) return DYN_OK;
  /* One scratch for the largest event; validation bounded it by len. */
  dyn_kv_block_t *blocks = max_count ? malloc(max_count * sizeof *blocks) : NULL;
  if (max_count && !blocks) return *why = "KV event batch: out of memory", DYN_ENOMEM;
  size_t off = DYN_KV_WIRE_HEADER;
  for (uint32_t i = 0; i < n_events && !rc; i++) {
    wire_event_t w;
    parse_event(p + off, len - off, &w, why); /* cannot fail: validated */
    off += DYN_KV_WIRE_EVENT + w.body_len;
    dyn_kv_event_t ev;
    to_event(&w, blocks, (dyn_kv_hash_t *)blocks, &ev);
    rc = cb(ud, worker, &ev);
  }
  free(blocks);
  return rc;
}
