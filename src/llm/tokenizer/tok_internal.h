/* tok_internal.h - what the tokenizer's files share: the pre-tokenizer
 * (pretok.c), the byte-level character map, the BPE merge table (bpe.c)
 * and the tokenizer's own layout (tokenizer.c); UTF-8 is common/utf8.h.
 * Not installed; tests include it to reach the splitter directly. */
#ifndef DYN_LLM_TOK_INTERNAL_H
#define DYN_LLM_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynamo/llm/tokenizer.h"
#include "common/utf8.h"

/* ---- pre-tokenizer (pretok.c) -------------------------------------------- */

/* The two split patterns most byte-level BPE models use, as written in
 * their tokenizer.json files (GPT-2's is also ByteLevel's use_regex). */
extern const char dyn__pat_gpt2[];
extern const char dyn__pat_cl100k[];

#define DYN__PRETOK_MAX_STEPS 4

/* A chain of regex splits (behavior "Isolated": matches and the gaps
 * between them both become pieces); each step splits the pieces of the
 * step before. No steps: the whole text is one piece. */
typedef struct dyn__pretok {
  void *code[DYN__PRETOK_MAX_STEPS]; /* pcre2_code_8 * */
  bool jit[DYN__PRETOK_MAX_STEPS];     /* JIT-compiled: call pcre2_jit_match */
  int n;
  bool add_prefix_space; /* ByteLevel: prepend ' ' unless the text starts with one */
} dyn__pretok_t;

int dyn__pretok_add(dyn__pretok_t *p, const char *pattern, size_t len, bool literal,
                    char *err, size_t errlen);
void dyn__pretok_free(dyn__pretok_t *p);

/* Per-call state (PCRE2 match data): one per thread at a time. */
typedef struct dyn__pretok_run {
  void *md[DYN__PRETOK_MAX_STEPS];
} dyn__pretok_run_t;

int dyn__pretok_run_init(const dyn__pretok_t *p, dyn__pretok_run_t *r);
void dyn__pretok_run_free(dyn__pretok_run_t *r);

typedef int (*dyn__piece_fn)(void *ud, const char *s, size_t n);
/* Calls fn for each piece of s in order (never empty); stops at the first
 * non-zero return and returns it. s must be valid UTF-8. */
int dyn__pretok_split(const dyn__pretok_t *p, dyn__pretok_run_t *r, const char *s,
                      size_t n, dyn__piece_fn fn, void *ud);

/* ---- byte-level map (pretok.c) ------------------------------------------- */

/* GPT-2's reversible byte -> printable code point map, and back (-1: the
 * code point stands for no byte). */
uint32_t dyn__bytelevel_cp(uint8_t b);
int dyn__bytelevel_byte(uint32_t cp);

/* ---- BPE merge table (bpe.c) --------------------------------------------- */

typedef struct dyn__merge_slot {
  uint64_t key; /* left << 32 | right, UINT64_MAX: empty */
  uint32_t rank, id;
} dyn__merge_slot_t;

typedef struct dyn__merges {
  dyn__merge_slot_t *slots;
  size_t mask, n;
} dyn__merges_t;

int dyn__merges_init(dyn__merges_t *m, size_t expected);
void dyn__merges_free(dyn__merges_t *m);
/* Adds (left,right) -> id with the given rank; a pair listed twice takes
 * its last rank, as HF's merge map (built by collecting into a HashMap). */
int dyn__merges_add(dyn__merges_t *m, uint32_t left, uint32_t right, uint32_t rank, uint32_t id);
const dyn__merge_slot_t *dyn__merges_get(const dyn__merges_t *m, uint32_t left, uint32_t right);

/* Scratch memory for BPE on one word, reused across words of one call. */
typedef struct dyn__bpe_scratch {
  void *sym, *heap;
  size_t cap;
} dyn__bpe_scratch_t;

void dyn__bpe_scratch_free(dyn__bpe_scratch_t *s);

/* Applies merges to ids[0..n) in place (lowest rank first, leftmost first
 * on ties, as HF's Word::merge_all) and returns the new count. */
int dyn__bpe(const dyn__merges_t *m, dyn__bpe_scratch_t *s, uint32_t *ids, size_t n,
             size_t *out_n);

/* ---- the tokenizer (tok_build.c builds it for tok_load.c and tok_gguf.c,
 * tokenizer.c uses it) ---------------------------------------------------- */

#define DYN__TOK_PRESENT 1u
#define DYN__TOK_SPECIAL 2u
#define DYN__TOK_ADDED 4u

/* Ids above this are refused: real vocabularies stay under 300,000, and a
 * hostile file must not make us allocate gigabytes for one big id. */
#define DYN__TOK_MAX_ID (1u << 24)

/* Per id: its string as the file spells it and the bytes it decodes to,
 * both as offsets into the tokenizer's arena (which moves while loading). */
typedef struct dyn__tokinfo {
  uint32_t str_off, str_len, byte_off, byte_len;
  uint8_t flags;
} dyn__tokinfo_t;

/* string -> id, open addressing; len UINT32_MAX marks an empty slot. */
typedef struct dyn__strslot {
  uint32_t off, len, id;
} dyn__strslot_t;

typedef struct dyn__added {
  uint32_t off, len, id;
} dyn__added_t;

struct dyn_tokenizer {
  char *name;
  uint32_t n_ids;
  dyn__tokinfo_t *tok;
  char *arena;
  size_t arena_len, arena_cap;
  dyn__strslot_t *map;
  size_t map_mask, map_n;
  dyn__merges_t merges;
  int64_t byte_id[256]; /* id of each byte's byte-level character, -1: none */
  int64_t unk_id, bos_id, eos_id, eot_id, eom_id; /* -1: none */
  bool ignore_merges;
  bool add_bos;        /* the file asks for BOS before a prompt */
  char *chat_template; /* the file's own (Jinja) chat template, or NULL */
  dyn__pretok_t pre;
  /* Added tokens by first byte, longest first: those starting with byte c
   * are added[added_at[c] .. added_at[c + 1]). */
  dyn__added_t *added;
  size_t n_added;
  uint32_t added_at[257];
};

/* A tokenizer being built, and where its errors go: every failure writes
 * "NAME: what was wrong" into err. */
typedef struct dyn__tokload {
  dyn_tokenizer_t *tk;
  const char *name;
  char *err;
  size_t errlen;
} dyn__tokload_t;

int dyn__tok_fail(dyn__tokload_t *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Allocates l->tk (all special ids unset). */
int dyn__tok_begin(dyn__tokload_t *l);
/* Sizes the per-id table for ids [0, n_ids) and the string map for about
 * `expected` strings. */
int dyn__tok_alloc_ids(dyn__tokload_t *l, uint32_t n_ids, size_t expected);
/* Gives id its string (flags: DYN__TOK_*). Its decoded bytes are the
 * string mapped back through the byte-level map or, with raw, the string
 * itself. */
int dyn__tok_set(dyn__tokload_t *l, uint32_t id, const char *s, size_t n, uint8_t flags, bool raw);
/* Indexes the ids flagged DYN__TOK_ADDED for matching in text. */
int dyn__tok_index_added(dyn__tokload_t *l);
/* Fills the byte -> id table, and BOS/EOS by well-known names where the
 * file named none. */
void dyn__tok_finish(dyn_tokenizer_t *tk);

/* string -> id lookup in tk->map. */
int dyn__tok_find(const dyn_tokenizer_t *tk, const char *s, size_t n, uint32_t *id);

/* Builds a tokenizer from a GGUF file's bytes, or from the file (which
 * dyn_tokenizer_load_file calls for a file that starts with "GGUF"); see
 * tok_gguf.c. */
int dyn__tokenizer_load_gguf_buf(const uint8_t *data, size_t len, const char *name,
                                 dyn_tokenizer_t **out, char *err, size_t errlen);
int dyn__tokenizer_load_gguf_file(const char *path, dyn_tokenizer_t **out, char *err, size_t errlen);

#endif
