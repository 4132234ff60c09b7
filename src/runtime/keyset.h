/* keyset.h - the keys a discovery backend has put for this process.
 *
 * Every backend must put them back after it lost and regained its server
 * (a restarted control plane, an etcd that forgot the lease), so each keeps
 * this small list of key -> value. A handful of keys per process: a list. */
#ifndef DYN__KEYSET_H
#define DYN__KEYSET_H

typedef struct dyn__key {
  struct dyn__key *next;
  char *key;
  char *value;
} dyn__key_t;

typedef struct dyn__keyset {
  dyn__key_t *head;
} dyn__keyset_t;

/* Sets key to value (copies both); DYN_OK or DYN_ENOMEM. */
int dyn__keyset_put(dyn__keyset_t *s, const char *key, const char *value);
void dyn__keyset_del(dyn__keyset_t *s, const char *key);
void dyn__keyset_clear(dyn__keyset_t *s);
#endif
