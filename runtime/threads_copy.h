/*
** threads_copy.h: the value copy rules of braid.threads (threads_copy.c),
** private to threads.c. Buffers are malloc'd, not Lua memory: they cross
** threads and may outlive the state that filled them.
*/
#ifndef BRAID_THREADS_COPY_H
#define BRAID_THREADS_COPY_H

#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>

struct buf { char *p; size_t n, cap; };  /* n bytes used of cap */

void braid_buf_free(struct buf *b);

/* Append the n values from stack index `first` to b. On failure b is as it
** was and msg reads "<fname>: argument #k (<why>) cannot be copied <dir>"
** (k counted from argn; with argn 0, "the result"). Returns 0, EINVAL (not
** copyable) or ENOMEM; never raises. */
int braid_copy_encode(lua_State *L, int first, int n, struct buf *b, const char *fname,
                      int argn, const char *dir, char *msg, size_t msglen);

/* Append n strings as a list of values (no Lua state needed). 0 or ENOMEM. */
int braid_copy_strings(struct buf *b, int n, const char **s, const size_t *len);

/* Push the values b holds; returns how many. Raises (memory) only. */
int braid_copy_decode(lua_State *L, const struct buf *b);

#endif
