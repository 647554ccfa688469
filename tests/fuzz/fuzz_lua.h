/*
** fuzz_lua.h: what both fuzz targets share. One Lua state per process,
** made on the first input and kept: standard libraries, braid.core
** preloaded as runtime/main.c does it, package.path on the source tree's
** lua/ folder. Invariant: between inputs the stack holds exactly what the
** target's setup chunk returned (fuzz_top() values), nothing else.
**
** liblua is not instrumented, so libFuzzer cannot see which Lua lines an
** input runs. Under libFuzzer (BRAID_FUZZ_LUA_COVERAGE) a line hook counts
** (source, previous line, line) edges into libFuzzer's extra counters, so
** basic.lua's branches guide the search as framing.c's do.
*/
#ifndef BRAID_FUZZ_LUA_H
#define BRAID_FUZZ_LUA_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "braid.h"

#ifndef BRAID_SOURCE_LUA_DIR
#error "BRAID_SOURCE_LUA_DIR must name the source tree's lua/ folder"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn, format(printf, 1, 2)))
static inline void fuzz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("\nFUZZ FAILURE: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

#ifdef BRAID_FUZZ_LUA_COVERAGE
#define FUZZ_LUA_COUNTERS 16384
__attribute__((section("__libfuzzer_extra_counters"), used))
static uint8_t fuzz_lua_counters[FUZZ_LUA_COUNTERS];
static uintptr_t fuzz_lua_prev;

static void fuzz_lua_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return;
  /* ar->source points into the chunk's source string: stable per file */
  uintptr_t cur = (uintptr_t)ar->source * 0x9E3779B1u ^ (uintptr_t)ar->currentline * 0x85EBCA77u;
  uint8_t *c = &fuzz_lua_counters[(cur ^ (fuzz_lua_prev >> 1)) % FUZZ_LUA_COUNTERS];
  if (*c != 255) (*c)++; /* saturate: a wrapped counter would read as new */
  fuzz_lua_prev = cur;
}
#endif

/* the state (NULL until the first input) and its setup results' count */
static lua_State *fuzz_L;
static int fuzz_nresults;
static unsigned long fuzz_inputs;

static inline int fuzz_top(void) { return fuzz_nresults; }

/* at exit: close the state, so LeakSanitizer sees what it failed to free */
static void fuzz_close(void) {
  if (fuzz_L) lua_close(fuzz_L);
  fuzz_L = NULL;
}

/* Make the state once: chunk gets the lua/ folder as `...` and returns the
   values the target works with (left at stack slots 1..nresults). */
static inline lua_State *fuzz_state(const char *chunk, int nresults) {
  if (fuzz_L) return fuzz_L;
  lua_State *L = luaL_newstate();
  if (L == NULL) fuzz_fail("luaL_newstate: out of memory");
  luaL_openlibs(L);
  luaL_requiref(L, "braid.core", luaopen_braid_core, 0);
  lua_pop(L, 1);
  if (luaL_loadstring(L, chunk) != LUA_OK) fuzz_fail("setup chunk: %s", lua_tostring(L, -1));
  lua_pushstring(L, BRAID_SOURCE_LUA_DIR);
  if (lua_pcall(L, 1, nresults, 0) != LUA_OK) fuzz_fail("setup chunk: %s", lua_tostring(L, -1));
  fuzz_nresults = nresults;
#ifdef BRAID_FUZZ_LUA_COVERAGE
  lua_sethook(L, fuzz_lua_hook, LUA_MASKLINE, 0);
#endif
  fuzz_L = L;
  atexit(fuzz_close);
  return L;
}

/* before each input */
static inline void fuzz_begin(lua_State *L) {
  lua_settop(L, fuzz_top());
#ifdef BRAID_FUZZ_LUA_COVERAGE
  fuzz_lua_prev = 0;
#endif
}

/* after each input: drop everything it left, and collect it, so a long
   run holds no more than one input's garbage at a time */
static inline void fuzz_end(lua_State *L) {
  lua_settop(L, fuzz_top());
  if (++fuzz_inputs % 256 == 0) lua_gc(L, LUA_GCCOLLECT);
  else lua_gc(L, LUA_GCSTEP, 0);
}

/* `s` as a Lua string literal, into out (at most cap bytes, NUL included) */
static inline void fuzz_quote(char *out, size_t cap, const char *s, size_t n) {
  size_t o = 0;
  if (cap < 8) { if (cap) out[0] = '\0'; return; }
  out[o++] = '"';
  size_t i = 0;
  for (; i < n && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
    else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
    else if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
    else if (c >= 32 && c < 127) out[o++] = (char)c;
    else o += (size_t)snprintf(out + o, cap - o, "\\%03u", c);
  }
  if (i < n) { memcpy(out + o, "...", 3); o += 3; }
  out[o++] = '"';
  out[o] = '\0';
}

#endif
