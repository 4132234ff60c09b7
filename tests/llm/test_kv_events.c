/* test_kv_events.c - the KV event wire format: random batches round-trip
 * exactly (and re-encode to the same bytes), every truncation and each
 * kind of corruption is rejected with DYN_EPROTO and a reason before any
 * event is delivered, and encode refuses bad events. */
#include "llm/kv/encode.h"
#include "dynamo/llm/kv.h"
#include "harness.h"
#include "common/buf.h"

static uint64_t rng = 0x5eed;
static uint64_t rnd(void) {
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#define MAXEV 12
#define MAXN 40

typedef struct batch {
  uint64_t worker;
  dyn_kv_event_t ev[MAXEV];
  dyn_kv_block_t blocks[MAXEV][MAXN];
  dyn_kv_hash_t removed[MAXEV][MAXN];
  size_t n;
} batch_t;

static void random_batch(batch_t *b) {
  memset(b, 0, sizeof *b);
  b->worker = rnd();
  b->n = rnd() % MAXEV;
  for (size_t i = 0; i < b->n; i++) {
    dyn_kv_event_t *e = &b->ev[i];
    e->kind = (dyn_kv_event_kind_t)(1 + rnd() % 3);
    e->event_id = rnd();
    size_t cnt = rnd() % MAXN;
    if (e->kind == DYN_KV_STORED) {
      e->has_parent = (int)(rnd() & 1);
      e->parent_seq_hash = e->has_parent ? rnd() : 0;
      for (size_t k = 0; k < cnt; k++) {
        b->blocks[i][k].seq_hash = rnd();
        b->blocks[i][k].local_hash = rnd();
      }
      e->blocks = b->blocks[i];
      e->n_blocks = cnt;
    } else if (e->kind == DYN_KV_REMOVED) {
      for (size_t k = 0; k < cnt; k++) b->removed[i][k] = rnd();
      e->removed = b->removed[i];
      e->n_removed = cnt;
    }
  }
}

/* Collects decoded events, checking each against the expected batch. */
typedef struct check {
  const batch_t *want;
  size_t got;
  int bad;
} check_t;

static int same_event(const dyn_kv_event_t *a, const dyn_kv_event_t *b) {
  if (a->kind != b->kind || a->event_id != b->event_id) return 0;
  if (a->kind == DYN_KV_STORED) {
    if (!!a->has_parent != !!b->has_parent || a->n_blocks != b->n_blocks) return 0;
    if (a->has_parent && a->parent_seq_hash != b->parent_seq_hash) return 0;
    for (size_t k = 0; k < a->n_blocks; k++)
      if (a->blocks[k].seq_hash != b->blocks[k].seq_hash ||
          a->blocks[k].local_hash != b->blocks[k].local_hash)
        return 0;
  }
  if (a->kind == DYN_KV_REMOVED) {
    if (a->n_removed != b->n_removed) return 0;
    for (size_t k = 0; k < a->n_removed; k++)
      if (a->removed[k] != b->removed[k]) return 0;
  }
  return 1;
}

static int on_check(void *ud, uint64_t worker, const dyn_kv_event_t *ev) {
  check_t *c = ud;
  if (worker != c->want->worker || c->got >= c->want->n || !same_event(ev, &c->want->ev[c->got]))
    c->bad++;
  c->got++;
  return 0;
}

static int on_count(void *ud, uint64_t worker, const dyn_kv_event_t *ev) {
  (void)worker;
  (void)ev;
  (*(int *)ud)++;
  return 0;
}

/* Re-encodes what it decodes: the format is canonical. */
static int on_reencode(void *ud, uint64_t worker, const dyn_kv_event_t *ev) {
  (void)worker;
  dyn__buf_t *b = ud;
  dyn__buf_t one;
  dyn__buf_init(&one);
  int rc = dyn__kv_encode(&one, 0, ev, 1);
  if (!rc) {
    /* Append the event bytes without the single-event header. */
    rc = dyn__buf_append(b, one.data + DYN_KV_WIRE_HEADER, one.len - DYN_KV_WIRE_HEADER);
  }
  dyn__buf_free(&one);
  return rc;
}

static void test_roundtrip(void) {
  int fails = 0;
  static batch_t b;
  for (int iter = 0; iter < 2000; iter++) {
    random_batch(&b);
    dyn__buf_t buf;
    dyn__buf_init(&buf);
    if (dyn__kv_encode(&buf, b.worker, b.ev, b.n) != DYN_OK) {
      fails++;
      continue;
    }
    if (buf.len != dyn_kv_encoded_size(b.ev, b.n)) fails++;
    check_t c = {&b, 0, 0};
    uint64_t w = 0;
    const char *why = NULL;
    int rc = dyn_kv_decode(buf.data, buf.len, &w, on_check, &c, &why);
    if (rc || c.bad || c.got != b.n || w != b.worker) {
      fails++;
      fprintf(stderr, "iter %d: rc %d bad %d got %zu/%zu why %s\n", iter, rc, c.bad, c.got,
              b.n, why ? why : "-");
    }
    dyn__buf_t re;
    dyn__buf_init(&re);
    if (dyn__buf_append(&re, buf.data, DYN_KV_WIRE_HEADER) ||
        dyn_kv_decode(buf.data, buf.len, NULL, on_reencode, &re, NULL) || re.len != buf.len ||
        memcmp(re.data, buf.data, buf.len))
      fails++;
    dyn__buf_free(&re);
    dyn__buf_free(&buf);
  }
  CHECK_EQ_INT(fails, 0);
}

/* Appending: two batches in one buffer are two valid payloads. */
static void test_append(void) {
  dyn_kv_hash_t h[2] = {1, 2};
  dyn_kv_event_t e = {.kind = DYN_KV_REMOVED, .event_id = 7, .removed = h, .n_removed = 2};
  dyn__buf_t buf;
  dyn__buf_init(&buf);
  CHECK_STATUS(dyn__kv_encode(&buf, 1, &e, 1), DYN_OK);
  size_t first = buf.len;
  CHECK_EQ_INT(first, DYN_KV_WIRE_HEADER + DYN_KV_WIRE_EVENT + 16);
  CHECK_STATUS(dyn__kv_encode(&buf, 2, &e, 1), DYN_OK);
  CHECK_EQ_INT(buf.len, 2 * first);
  uint64_t w = 0;
  int n = 0;
  CHECK_STATUS(dyn_kv_decode(buf.data + first, first, &w, on_count, &n, NULL), DYN_OK);
  CHECK_EQ_U64(w, 2);
  CHECK_EQ_INT(n, 1);
  /* The whole buffer is one batch followed by trailing bytes. */
  const char *why = NULL;
  CHECK_STATUS(dyn_kv_decode(buf.data, buf.len, NULL, on_count, &n, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "trailing"));
  dyn__buf_free(&buf);
}

static void test_truncation(void) {
  static batch_t b;
  int fails = 0, delivered = 0;
  for (int iter = 0; iter < 200; iter++) {
    random_batch(&b);
    if (!b.n) continue;
    dyn__buf_t buf;
    dyn__buf_init(&buf);
    dyn__kv_encode(&buf, b.worker, b.ev, b.n);
    for (size_t len = 0; len < buf.len; len++) {
      /* A fresh copy of exactly len bytes, so ASan sees any over-read. */
      uint8_t *cut = malloc(len ? len : 1);
      memcpy(cut, buf.data, len);
      const char *why = NULL;
      int rc = dyn_kv_decode(cut, len, NULL, on_count, &delivered, &why);
      if (rc != DYN_EPROTO || !why) fails++;
      free(cut);
    }
    dyn__buf_free(&buf);
  }
  CHECK_EQ_INT(fails, 0);
  CHECK_EQ_INT(delivered, 0);
}

/* Decodes bytes and returns the status; *why the reason. */
static int dec(const uint8_t *p, size_t n, const char **why) {
  int cnt = 0;
  *why = NULL;
  int rc = dyn_kv_decode(p, n, NULL, on_count, &cnt, why);
  if (rc && cnt) return 1; /* a bad batch must deliver nothing */
  return rc;
}

static void test_corruption(void) {
  dyn_kv_block_t blk[2] = {{11, 12}, {13, 14}};
  dyn_kv_event_t ev[2] = {
      {.kind = DYN_KV_STORED, .event_id = 1, .has_parent = 1, .parent_seq_hash = 5,
       .blocks = blk, .n_blocks = 2},
      {.kind = DYN_KV_CLEARED, .event_id = 2},
  };
  dyn__buf_t buf;
  dyn__buf_init(&buf);
  REQUIRE(dyn__kv_encode(&buf, 42, ev, 2) == DYN_OK);
  uint8_t p[256];
  size_t n = buf.len;
  REQUIRE(n <= sizeof p);
  const char *why;
  CHECK_STATUS(dec(buf.data, n, &why), DYN_OK);
  CHECK(why == NULL);
  size_t ev2 = DYN_KV_WIRE_HEADER + DYN_KV_WIRE_EVENT + 8 + 32; /* the CLEARED event */
  struct {
    size_t off;
    uint8_t val;
    const char *reason;
  } cases[] = {
      {0, 'X', "magic"},
      {2, 2, "version"},
      {3, 1, "header flags"},
      {12, 3, "truncated"},        /* n_events 3: a third event is missing */
      {12, 1, "trailing"},         /* n_events 1: the CLEARED is left over */
      {16, 9, "unknown event kind"},
      {16, 0, "unknown event kind"},
      {17, 2, "flag bits"},
      {26, 3, "exceeds"},          /* 3 blocks, only 2 present */
      {ev2 + 1, 1, "has_parent"},  /* has_parent on a CLEARED */
      {ev2 + 10, 1, "CLEARED"},
      {ev2 + 13, 0x80, "CLEARED"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memcpy(p, buf.data, n);
    p[cases[i].off] = cases[i].val;
    int rc = dec(p, n, &why);
    CHECK_MSG(rc == DYN_EPROTO && why && strstr(why, cases[i].reason),
              "case %zu: rc %d why \"%s\", want \"%s\"", i, rc, why ? why : "(null)",
              cases[i].reason);
  }
  /* A count that would overflow a naive multiplication. */
  memcpy(p, buf.data, n);
  p[26] = p[27] = p[28] = p[29] = 0xff;
  CHECK_STATUS(dec(p, n, &why), DYN_EPROTO);
  /* A REMOVED event cannot carry more hashes than bytes. */
  dyn_kv_hash_t h = 3;
  dyn_kv_event_t r = {.kind = DYN_KV_REMOVED, .removed = &h, .n_removed = 1};
  dyn__buf_t rb;
  dyn__buf_init(&rb);
  dyn__kv_encode(&rb, 1, &r, 1);
  rb.data[26] = 2;
  CHECK_STATUS(dec(rb.data, rb.len, &why), DYN_EPROTO);
  dyn__buf_free(&rb);
  CHECK_STATUS(dyn_kv_decode(NULL, 5, NULL, NULL, NULL, &why), DYN_EINVAL);
  CHECK_STATUS(dyn_kv_decode(NULL, 0, NULL, NULL, NULL, &why), DYN_EPROTO);
  dyn__buf_free(&buf);
}

static int on_stop(void *ud, uint64_t worker, const dyn_kv_event_t *ev) {
  (void)worker;
  (void)ev;
  return ++*(int *)ud == 2 ? DYN_ECANCELED : 0;
}

static void test_callback_stops(void) {
  dyn_kv_event_t ev[3] = {{.kind = DYN_KV_CLEARED}, {.kind = DYN_KV_CLEARED},
                          {.kind = DYN_KV_CLEARED}};
  dyn__buf_t buf;
  dyn__buf_init(&buf);
  dyn__kv_encode(&buf, 1, ev, 3);
  int n = 0;
  CHECK_STATUS(dyn_kv_decode(buf.data, buf.len, NULL, on_stop, &n, NULL), DYN_ECANCELED);
  CHECK_EQ_INT(n, 2);
  dyn__buf_free(&buf);
}

static void test_encode_rejects(void) {
  dyn__buf_t buf;
  dyn__buf_init(&buf);
  dyn_kv_event_t bad_kind = {.kind = (dyn_kv_event_kind_t)7};
  dyn_kv_event_t null_blocks = {.kind = DYN_KV_STORED, .n_blocks = 3};
  dyn_kv_event_t null_removed = {.kind = DYN_KV_REMOVED, .n_removed = 1};
  CHECK_STATUS(dyn__kv_encode(&buf, 1, &bad_kind, 1), DYN_EINVAL);
  CHECK_STATUS(dyn__kv_encode(&buf, 1, &null_blocks, 1), DYN_EINVAL);
  CHECK_STATUS(dyn__kv_encode(&buf, 1, &null_removed, 1), DYN_EINVAL);
  CHECK_STATUS(dyn__kv_encode(&buf, 1, NULL, 1), DYN_EINVAL);
  CHECK_STATUS(dyn__kv_encode(NULL, 1, &bad_kind, 0), DYN_EINVAL);
  CHECK_EQ_INT(buf.len, 0);
  /* Unused fields are ignored: a CLEARED with blocks encodes as bare. */
  dyn_kv_block_t blk = {1, 2};
  dyn_kv_event_t cl = {.kind = DYN_KV_CLEARED, .has_parent = 1, .blocks = &blk, .n_blocks = 1};
  CHECK_STATUS(dyn__kv_encode(&buf, 1, &cl, 1), DYN_OK);
  CHECK_EQ_INT(buf.len, DYN_KV_WIRE_HEADER + DYN_KV_WIRE_EVENT);
  CHECK_STATUS(dyn__kv_encode(&buf, 1, NULL, 0), DYN_OK); /* an empty batch */
  const char *why;
  CHECK_STATUS(dec(buf.data + DYN_KV_WIRE_HEADER + DYN_KV_WIRE_EVENT, DYN_KV_WIRE_HEADER, &why),
               DYN_OK);
  dyn__buf_free(&buf);
}

int main(void) {
  test_roundtrip();
  test_append();
  test_truncation();
  test_corruption();
  test_callback_stops();
  test_encode_rejects();
  TEST_END();
}
