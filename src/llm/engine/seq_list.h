/* seq_list.h - the engines' queues of sequences (waiting, running): an
 * intrusive doubly-linked list over a struct with prev and next members;
 * and the list of ended sequences a step in flight still points at.
 *
 * Written once here for every engine, and kept typed: DYN__SEQ_LIST_TYPE
 * declares the list of T, and DYN__SEQ_LIST_FUNCS (once T is complete)
 * its static list_push (at the back, or the front) and list_unlink, so an
 * engine walks its queues with its own pointers and no casts.
 *
 * A sequence that ends while the step in flight holds it (its in_batch
 * set) must outlive the step: DYN__SEQ_DEAD_FUNCS (once T and its free
 * function exist) declares seq_dispose, which frees an ended sequence now
 * or puts it on a dead list through its dead_next member, and
 * seq_free_dead, which frees that list once the step is over. */
#ifndef DYN__LLM_ENGINE_SEQ_LIST_H
#define DYN__LLM_ENGINE_SEQ_LIST_H
#include <stdint.h>

#define DYN__SEQ_LIST_TYPE(list_t, T) \
  typedef struct {                    \
    T *head, *tail;                   \
    uint32_t n;                       \
  } list_t

#define DYN__SEQ_LIST_FUNCS(list_t, T)                       \
  static void list_push(list_t *l, T *s, int front) {        \
    s->prev = front ? NULL : l->tail;                        \
    s->next = front ? l->head : NULL;                        \
    if (front) {                                             \
      if (l->head) l->head->prev = s;                        \
      else l->tail = s;                                      \
      l->head = s;                                           \
    } else {                                                 \
      if (l->tail) l->tail->next = s;                        \
      else l->head = s;                                      \
      l->tail = s;                                           \
    }                                                        \
    l->n++;                                                  \
  }                                                          \
  static void list_unlink(list_t *l, T *s) {                 \
    if (s->prev) s->prev->next = s->next;                    \
    else l->head = s->next;                                  \
    if (s->next) s->next->prev = s->prev;                    \
    else l->tail = s->prev;                                  \
    s->prev = s->next = NULL;                                \
    l->n--;                                                  \
  }

#define DYN__SEQ_DEAD_FUNCS(T, free_fn)                      \
  static void seq_dispose(T **dead, T *s) {                  \
    if (s->in_batch) {                                       \
      s->dead_next = *dead;                                  \
      *dead = s;                                             \
    } else {                                                 \
      free_fn(s);                                            \
    }                                                        \
  }                                                          \
  static void seq_free_dead(T **dead) {                      \
    while (*dead) {                                          \
      T *s = *dead;                                          \
      *dead = s->dead_next;                                  \
      free_fn(s);                                            \
    }                                                        \
  }

#endif
