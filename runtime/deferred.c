/*
** deferred.c: the Deferred chain runner and the hot Deferred methods in C.
**
** braid.defer (lua/braid/defer.lua) owns the Deferred: a Lua table whose
** array part holds the callback chain as triples (callback, errback, args)
** at _h+1 .. _n (defer.lua's header has what each slot may hold; the slots
** past _n hold nil or false only, so an add writes only what it needs),
** and whose fields (called, result, paused, _running, ...)
** default to the class table's values. This file works on that very table
** layout, so the Lua and the C implementations are interchangeable: the Lua
** module binds these functions with core.defer_bind(cfg) and falls back to
** its own (identical) Lua code where braid.core cannot be loaded (worker
** threads) or when BRAID_DEFER_LUA is set.
**
** What lives here, and why (scripts/bench/deferred measured it):
**   run(d, plain)       Twisted's iterative _runCallbacks: each Deferred of a
**                       chain runs its callbacks inside one lua_pcall (not one
**                       per callback); a Deferred returned by a callback is
**                       chained with a CONTINUE entry, and a table is the
**                       stack of waiting Deferreds, so the C stack never grows
**                       with the chain.
**   __new (Deferred()), callback(d, v), addCallback, addErrback, addBoth,
**   addCallbacks, succeed, await:
**                       the common case (a plain result, functions without
**                       extra arguments); anything else calls the Lua version
**                       given in cfg, which raises the errors and handles
**                       Failures, extra arguments and debugging.
** Rare work (unhandled-failure bookkeeping, resuming inlineCallbacks
** coroutines, firing chained Deferreds, wrapping errors in Failures) calls
** back into the Lua helpers given in cfg.
**
** Every field is read with rawget, an absent field meaning the class default
** (false, or 0 for the counters): defer.lua keeps those defaults on the class
** table for exactly this reason.
*/
#include <limits.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "braid.h"

/* Upvalues shared by every closure made by defer_bind. */
enum {
  U_DEFERRED = 1, /* the Deferred class (metatable of plain Deferreds) */
  U_FAILURE,      /* the Failure class */
  U_KIND,         /* KIND[metatable] -> 0 plain, 1 Failure, 2 Deferred */
  U_KIND_OF,      /* kind_of(mt): fills KIND */
  U_CONTINUE,     /* chain markers */
  U_RESUME,
  U_FIRE,
  U_MSGH,         /* xpcall message handler making Failures */
  U_MARK_FAILED,  /* mark_failed(d, f) */
  U_CLEAR_FAILED, /* clear_failed(d) */
  U_ENQUEUE,      /* enqueue(state, value): resume an inlineCallbacks */
  U_PREFIRE,      /* prefire(d, v, level) -> true if d now fired */
  U_SELF_FAILURE, /* self_failure() -> Failure(TypeError "returned itself") */
  U_WRAP_FAILURE, /* wrap_failure(e) -> e if a Failure, else Failure(e, "") */
  U_STATE,        /* struct dstate (userdata) */
  U_SLOW_CALLBACK,
  U_SLOW_ADDCALLBACK,
  U_SLOW_ADDERRBACK,
  U_SLOW_ADDBOTH,
  U_SLOW_ADDCALLBACKS,
  U_SLOW_SUCCEED,
  U_SLOW_AWAIT,
  U_SLOW_NEW,
  U_IC,           /* table: ic[1] is the running inlineCallbacks state */
  U_RUNQ,         /* table: the runs put off (runq[0] is the run closure) */
  U_SEGMENT,      /* the C segment closure (nil inside segment itself) */
  K_CALLED,       /* interned field names */
  K_RESULT,
  K_N,
  K_H,
  K_RUNNING,
  K_PAUSED,
  K_DBG,
  K_CHAINEDTO,
  K_WAITING,
  K_COUNT,        /* "n" of packed argument lists */
  K_CANCELLER,
  U_LAST = K_CANCELLER
};

#define UV(i) lua_upvalueindex(i)

/* a + b as Lua's integer arithmetic does it (wrapping): the counters are
** read from fields Lua code can overwrite, so C's signed overflow must not
** be reachable from them */
#define IADD(a, b) ((lua_Integer)((lua_Unsigned)(a) + (lua_Unsigned)(b)))
/* The continuation's context: h << 1 | h0, shifted as unsigned. */
#define SEG_CTX(h, h0) ((lua_KContext)(((lua_Unsigned)(h) << 1) | (lua_Unsigned)(h0)))
/* The most entries a chain can hold (a table's array part is smaller):
** an _n beyond it is an overwritten field, refused at the methods. */
#define MAX_N ((lua_Integer)1 << 31)

/* Shared by the closures of one defer_bind: protected calls nested by run()
** (defer.lua adds them to its own count to bound C-stack use) and whether
** setDebugging is on (then every call goes to the Lua versions). */
struct dstate {
  int cdepth;
  int debugging;
  const void *deferred_mt; /* the Deferred class (U_DEFERRED), compared by address */
  lua_Integer q_head, q_tail; /* U_RUNQ[q_head .. q_tail]: runs put off */
  int draining;            /* the outermost run is running them */
};

/* A run() nested this deep (runs under way, each about two of Lua's nested
** C calls) is put off: its Deferred goes to U_RUNQ, run by the outermost
** run when it ends, so that callbacks that fire other Deferreds (a
** DeferredLock handing over, nested DeferredLists, cancel cascades) cannot
** overflow Lua's C stack (LUAI_MAXCCALLS, 200). Below it, runs nest as
** Twisted's do. (defer.lua's runner has its own, MAX_RUN_NEST.) */
#define MAX_RUN_NEST 40

#define DSTATE(L) ((struct dstate *)lua_touserdata(L, UV(U_STATE)))

static const char *const CFG_NAMES[] = {
  [U_DEFERRED] = "Deferred", [U_FAILURE] = "Failure", [U_KIND] = "KIND",
  [U_KIND_OF] = "kind_of", [U_CONTINUE] = "CONTINUE", [U_RESUME] = "RESUME",
  [U_FIRE] = "FIRE", [U_MSGH] = "msgh", [U_MARK_FAILED] = "mark_failed",
  [U_CLEAR_FAILED] = "clear_failed", [U_ENQUEUE] = "enqueue",
  [U_PREFIRE] = "prefire", [U_SELF_FAILURE] = "self_failure",
  [U_WRAP_FAILURE] = "wrap_failure",
  [U_SLOW_CALLBACK] = "callback", [U_SLOW_ADDCALLBACK] = "addCallback",
  [U_SLOW_ADDERRBACK] = "addErrback", [U_SLOW_ADDBOTH] = "addBoth",
  [U_SLOW_ADDCALLBACKS] = "addCallbacks", [U_SLOW_SUCCEED] = "succeed",
  [U_SLOW_AWAIT] = "await", [U_SLOW_NEW] = "__new", [U_IC] = "ic", [U_RUNQ] = "runq",
};

static const char *const KEY_NAMES[] = {
  [K_CALLED] = "called", [K_RESULT] = "result", [K_N] = "_n", [K_H] = "_h",
  [K_RUNNING] = "_running", [K_PAUSED] = "paused", [K_DBG] = "_dbg",
  [K_CHAINEDTO] = "_chainedTo", [K_WAITING] = "waiting",
  [K_COUNT] = "n", [K_CANCELLER] = "_canceller",
};

/* ---- field access on the table at (absolute) index t ---- */

static int get_field(lua_State *L, int t, int key) {
  lua_pushvalue(L, UV(key));
  return lua_rawget(L, t);
}

static lua_Integer get_int(lua_State *L, int t, int key) {
  /* absent: 0; nil is told by its type, as lua_tointeger's conversion
  ** attempt on it costs more than the lookup */
  lua_Integer v = get_field(L, t, key) == LUA_TNIL ? 0 : lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static int get_bool(lua_State *L, int t, int key) {
  int v;
  get_field(L, t, key);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static void set_int(lua_State *L, int t, int key, lua_Integer v) {
  lua_pushvalue(L, UV(key));
  lua_pushinteger(L, v);
  lua_rawset(L, t);
}

static void set_bool(lua_State *L, int t, int key, int v) {
  lua_pushvalue(L, UV(key));
  lua_pushboolean(L, v);
  lua_rawset(L, t);
}

static void set_nil(lua_State *L, int t, int key) {
  lua_pushvalue(L, UV(key));
  lua_pushnil(L);
  lua_rawset(L, t);
}

/* t[key] = the value at index v */
static void set_value(lua_State *L, int t, int key, int v) {
  lua_pushvalue(L, UV(key));
  lua_pushvalue(L, v);
  lua_rawset(L, t);
}

/* object_kind for the table or userdata at idx: 0 a plain value, 1 a
** Failure, 2 a Deferred (defer.lua's KIND). The metatable is a table, so
** identity (lua_topointer) is raw equality with the classes. */
static int object_kind(lua_State *L, int idx) {
  const void *mt;
  int k;
  if (!lua_getmetatable(L, idx)) return 0;
  mt = lua_topointer(L, -1);
  if (mt == lua_topointer(L, UV(U_DEFERRED))) { lua_pop(L, 1); return 2; }
  if (mt == lua_topointer(L, UV(U_FAILURE))) { lua_pop(L, 1); return 1; }
  lua_pushvalue(L, -1);
  if (lua_rawget(L, UV(U_KIND)) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushvalue(L, UV(U_KIND_OF));
    lua_insert(L, -2);
    lua_call(L, 1, 1);
  } else {
    lua_remove(L, -2);
  }
  k = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return k;
}

/* The kind of any value: only tables and userdata can be Failures or
** Deferreds; other values' metatables (strings') are never those classes. */
static inline int value_kind(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TTABLE || t == LUA_TUSERDATA ? object_kind(L, idx) : 0;
}

/* helper(d) for the one-argument Lua helpers */
static void call1(lua_State *L, int fn, int arg) {
  lua_pushvalue(L, UV(fn));
  lua_pushvalue(L, arg);
  lua_call(L, 1, 0);
}

/* ---- the callback loop ----
**
** Callbacks may yield: an inlineCallbacks function can fire a Deferred whose
** callback awaits on the function's own coroutine, as Lua's xpcall allows in
** the Lua version. So every call that can reach user code is a lua_callk or
** lua_pcallk with a continuation, and the loops keep their state on the Lua
** stack or in the continuation's context, not in C locals alone. */

/* segment stack: 1 cur, 2 result, 3 fn, 4 args, 5 r (the callback's return
** value); the continuation's context is h, the next entry */
enum { S_CUR = 1, S_RESULT, S_FN, S_ARGS, S_R };

static int segment_loop(lua_State *L, lua_Integer h, int failed, int have_r, int h0);

/* the continuation's context: h << 1 | h0 (segment_loop's arguments) */
static int segment_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return segment_loop(L, (lua_Integer)(ctx >> 1), 0, 1, (int)(ctx & 1));  /* failed follows from r */
}

/* segment(cur, plain, resumed, fresh): run cur's callbacks (defer.lua's
** segment, line for line). fresh: cur was fired just now, so it starts at
** the first entry (_h is 0 and nothing was consumed). Returns the Deferred
** to continue with, or nothing. */
static int segment(lua_State *L) {
  int plain = lua_toboolean(L, 2), resumed = lua_toboolean(L, 3), failed = 0;
  int fresh = lua_toboolean(L, 4);
  lua_Integer h;
  lua_settop(L, 1);
  if (resumed) {  /* the chained Deferred is done: its callback() returned nil */
    set_nil(L, 1, K_RESULT);
    lua_pushnil(L);  /* 2: result */
  } else {
    get_field(L, 1, K_RESULT);  /* 2: result */
    if (!plain && !lua_isnil(L, S_RESULT)) failed = value_kind(L, S_RESULT) == 1;
  }
  set_bool(L, 1, K_RUNNING, 1);
  if (fresh) return segment_loop(L, 0, failed, 0, 1);
  h = get_int(L, 1, K_H);
  int h0 = h == 0;
  /* after an error the entries up to the one that raised are already nil */
  for (;;) {
    int empty = lua_rawgeti(L, 1, IADD(h, 1)) == LUA_TNIL;
    lua_pop(L, 1);
    if (!empty || h >= get_int(L, 1, K_N)) break;
    h = IADD(h, 3);
  }
  return segment_loop(L, h, failed, 0, h0);
}

/* Stop running cur; it goes on at entry h later. */
static void segment_stop(lua_State *L, lua_Integer h) {
  set_bool(L, 1, K_RUNNING, 0);
  set_int(L, 1, K_H, h);
}

/* segment_stop, and return the Deferred at index d to run next. */
static int segment_handoff(lua_State *L, lua_Integer h, int d) {
  segment_stop(L, h);
  lua_settop(L, d);
  return 1;
}

/* Push helper, the marker's argument and the result for a call that takes
** the result away: cur keeps nil, and the chain goes on unfailed. */
static void pass_result(lua_State *L, int helper) {
  lua_pushvalue(L, UV(helper));
  lua_pushvalue(L, S_ARGS);
  lua_pushvalue(L, S_RESULT);
  lua_pushnil(L);
  lua_replace(L, S_RESULT);
}

/* h0: cur's _h was 0 when the segment started, so it still is at the end
** (only cur's own segment sets it, and then returns at once) */
static int segment_loop(lua_State *L, lua_Integer h, int failed, int have_r, int h0) {
  /* _n only grows while cur runs (adds append; only this loop resets it),
  ** so it is read again only when h reaches the value last read */
  lua_Integer n = 0;
  for (;;) {
    if (!have_r) {
      if (h >= n && h >= (n = get_int(L, 1, K_N))) break;
      lua_settop(L, S_RESULT);
      lua_rawgeti(L, 1, IADD(h, failed ? 2 : 1));  /* fn */
      /* args or marker argument; nil or false: no extra arguments (the
      ** slots past _n hold nothing else, so an add writes only the slots
      ** it needs) */
      int targs = lua_rawgeti(L, 1, IADD(h, 3));
      int no_args = targs <= LUA_TBOOLEAN;
      lua_pushnil(L); lua_rawseti(L, 1, IADD(h, 1));
      lua_pushnil(L); lua_rawseti(L, 1, IADD(h, 2));
      if (!no_args) { lua_pushnil(L); lua_rawseti(L, 1, IADD(h, 3)); }
      h = IADD(h, 3);
      if (!lua_toboolean(L, S_FN)) continue;
      if (!no_args && targs != LUA_TTABLE)  /* Lua code wrote the slot */
        return luaL_error(L, "corrupt Deferred: the arguments of entry %I are a %s",
                          (LUAI_UACINT)(h / 3), lua_typename(L, targs));
      if (no_args) {
        lua_pushvalue(L, S_FN);
        lua_pushvalue(L, S_RESULT);
        lua_callk(L, 1, 1, SEG_CTX(h, h0), segment_k);
      } else if (lua_rawequal(L, S_FN, UV(U_CONTINUE))) {
        /* give our result to the Deferred waiting on us, then run it */
        set_value(L, S_ARGS, K_RESULT, S_RESULT);
        set_nil(L, 1, K_RESULT);
        if (get_bool(L, 1, K_DBG)) call1(L, U_CLEAR_FAILED, 1);
        set_int(L, S_ARGS, K_PAUSED, IADD(get_int(L, S_ARGS, K_PAUSED), -1));
        return segment_handoff(L, h, S_ARGS);
      } else if (lua_rawequal(L, S_FN, UV(U_RESUME))) {
        /* an await: the coroutine gets the result, we keep nil */
        set_nil(L, S_ARGS, K_WAITING);
        set_nil(L, 1, K_RESULT);
        pass_result(L, U_ENQUEUE);
        failed = 0;
        lua_call(L, 2, 0);
        continue;
      } else if (lua_rawequal(L, S_FN, UV(U_FIRE))) {
        /* chainDeferred: fire a, and run it from here (no recursion); cur
        ** keeps its result and stays running until a is done (as in
        ** defer.lua's segment) */
        int fired;
        lua_pushvalue(L, UV(U_PREFIRE));
        lua_pushvalue(L, S_ARGS);
        lua_pushvalue(L, S_RESULT);
        lua_pushinteger(L, 1);
        lua_call(L, 3, 1);
        fired = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (fired && get_int(L, S_ARGS, K_PAUSED) == 0) {
          set_int(L, 1, K_H, h);
          lua_settop(L, S_ARGS);
          return 1;
        }
        set_nil(L, 1, K_RESULT);
        lua_pushnil(L);
        lua_replace(L, S_RESULT);
        failed = 0;
        continue;
      } else {  /* fn(result, unpack(args, 1, args.n)) */
        lua_Integer i, n = get_int(L, S_ARGS, K_COUNT);
        if (n < 0 || n > 250 || !lua_checkstack(L, (int)n + 2))
          return luaL_error(L, "too many callback arguments");
        lua_pushvalue(L, S_FN);
        lua_pushvalue(L, S_RESULT);
        for (i = 1; i <= n; i++) lua_rawgeti(L, S_ARGS, i);
        lua_callk(L, (int)n + 1, 1, SEG_CTX(h, h0), segment_k);
      }
    }
    have_r = 0;
    {
      int k = value_kind(L, S_R);
      if (k == 2) {
        if (!lua_istable(L, S_R))  /* a userdata given the class, as Lua's runner reads it */
          return luaL_error(L, "attempt to index a Deferred value (a userdata)");
        if (lua_rawequal(L, S_R, 1)) {
          lua_pushvalue(L, UV(U_SELF_FAILURE));
          lua_call(L, 0, 1);
          lua_replace(L, S_R);
          failed = 1;
        } else {
          int wait = !get_bool(L, S_R, K_CALLED) || get_int(L, S_R, K_PAUSED) > 0;
          if (!wait) {
            get_field(L, S_R, K_RESULT);
            wait = value_kind(L, -1) == 2;
            lua_pop(L, 1);
          }
          if (wait) {
            /* wait for r: pause and chain */
            lua_Integer rn;
            set_int(L, 1, K_PAUSED, IADD(get_int(L, 1, K_PAUSED), 1));
            set_value(L, 1, K_CHAINEDTO, S_R);
            set_value(L, 1, K_RESULT, S_R);
            rn = get_int(L, S_R, K_N);
            lua_pushvalue(L, UV(U_CONTINUE)); lua_rawseti(L, S_R, IADD(rn, 1));
            lua_pushvalue(L, UV(U_CONTINUE)); lua_rawseti(L, S_R, IADD(rn, 2));
            lua_pushvalue(L, 1); lua_rawseti(L, S_R, IADD(rn, 3));
            set_int(L, S_R, K_N, IADD(rn, 3));
            segment_stop(L, h);
            if (get_bool(L, 1, K_DBG)) call1(L, U_CLEAR_FAILED, 1);
            return 0;
          }
          /* r already has a result: take it */
          get_field(L, S_R, K_RESULT);  /* rr */
          set_nil(L, S_R, K_RESULT);
          if (get_bool(L, S_R, K_DBG)) call1(L, U_CLEAR_FAILED, S_R);
          lua_replace(L, S_R);
          failed = value_kind(L, S_R) == 1;
        }
      } else {
        failed = k == 1;
      }
    }
    lua_settop(L, S_R);
    lua_replace(L, S_RESULT);
    set_value(L, 1, K_RESULT, S_RESULT);
  }
  set_bool(L, 1, K_RUNNING, 0);
  if (h != 0) {
    set_int(L, 1, K_N, 0);
    if (!h0 && get_int(L, 1, K_H) != 0) set_nil(L, 1, K_H);
  }
  if (failed) {
    lua_pushvalue(L, UV(U_MARK_FAILED));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, S_RESULT);
    lua_call(L, 2, 0);
  } else if (get_bool(L, 1, K_DBG)) {
    call1(L, U_CLEAR_FAILED, 1);
  }
  return 0;
}

/* run stack: 1 self, 2 msgh, 3 cur, 4 stack of waiting Deferreds (a table,
** made lazily), 5 its depth. ctx: bit 0, how many values the calling method
** returns (self for the add methods, nothing for run and callback); bit 1,
** plain, until the first segment has started; bit 2, resumed: cur was just
** popped and is still running (its chainDeferred callback fired the
** Deferred above it), so it goes on whatever its pause count. */
enum { R_SELF = 1, R_MSGH, R_CUR, R_STACK, R_SP };
#define RUN_NRET 1
#define RUN_PLAIN 2
#define RUN_RESUMED 4
#define RUN_FRESH 8   /* self was fired just now: not running, not paused, not chained */

/* Pop the stack into cur; 0 when it is empty. */
static int run_pop(lua_State *L) {
  lua_Integer sp = lua_tointeger(L, R_SP);
  if (sp == 0) return 0;
  lua_rawgeti(L, R_STACK, sp);
  lua_replace(L, R_CUR);
  lua_pushnil(L);
  lua_rawseti(L, R_STACK, sp);
  lua_pushinteger(L, sp - 1);
  lua_replace(L, R_SP);
  return 1;
}

static int run_loop(lua_State *L, int status, lua_KContext ctx);

/* Whether the error at the top (a Failure or a raw error) is Lua's stack
** overflow, or one raised while handling it: no room is left to run
** callbacks at this depth. */
static int overflowed(lua_State *L, int status) {
  int r = 0;
  if (status == LUA_ERRERR) return 1;
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushliteral(L, "value");
    lua_rawget(L, -2);
  } else {
    lua_pushvalue(L, -1);
  }
  if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    r = strstr(s, "stack overflow") != NULL || strcmp(s, "error in error handling") == 0;
  }
  lua_pop(L, 1);
  return r;
}

static int run_k(lua_State *L, int status, lua_KContext ctx) {
  return run_loop(L, status == LUA_YIELD ? LUA_OK : status, ctx);
}

/* Run the Deferred at index 1; ctx as for run_loop. */
static int run_impl(lua_State *L, lua_KContext ctx) {
  struct dstate *st = DSTATE(L);
  lua_settop(L, 1);
  if (!(ctx & RUN_FRESH) && get_bool(L, 1, K_RUNNING)) return (int)(ctx & RUN_NRET);
  if (st->cdepth >= MAX_RUN_NEST) {  /* put off: see MAX_RUN_NEST */
    lua_pushvalue(L, 1);
    lua_rawseti(L, UV(U_RUNQ), ++st->q_tail);
    return (int)(ctx & RUN_NRET);
  }
  lua_pushvalue(L, UV(U_MSGH));  /* 2 */
  lua_pushvalue(L, 1);           /* 3: cur */
  lua_pushnil(L);                /* 4: stack */
  lua_pushinteger(L, 0);         /* 5: sp */
  st->cdepth++;
  return run_loop(L, -1, ctx);
}

/* Run the Deferreds put off, oldest first, each as an outermost run (which
** may put off more, run by this same loop); then return what the run at
** index 1 returns. status: of the run just made (an error stops the loop,
** the rest waiting for the next outermost run). */
static int drain_loop(lua_State *L, int status, lua_KContext ctx) {
  struct dstate *st = DSTATE(L);
  for (;;) {
    if (status != LUA_OK && status != LUA_YIELD) {
      st->draining = 0;
      return lua_error(L);
    }
    if (st->q_head > st->q_tail) break;
    lua_Integer i = st->q_head++;
    lua_settop(L, 1);
    lua_rawgeti(L, UV(U_RUNQ), 0);  /* the run closure */
    lua_rawgeti(L, UV(U_RUNQ), i);
    lua_pushnil(L);
    lua_rawseti(L, UV(U_RUNQ), i);
    status = lua_pcallk(L, 1, 0, 0, ctx, drain_loop);
  }
  st->q_head = 1;
  st->q_tail = 0;
  st->draining = 0;
  lua_settop(L, 1);
  return (int)(ctx & RUN_NRET);
}

/* status -1: start the next segment; else a segment's pcall just ended */
static int run_loop(lua_State *L, int status, lua_KContext ctx) {
  int retried = 0;
  for (;;) {
    if (status == -1) {
      int fresh = (ctx & RUN_FRESH) != 0;  /* nothing below can hold for it */
      if (!fresh && !(ctx & RUN_RESUMED) && get_int(L, R_CUR, K_PAUSED) > 0) {
        /* cur waits, and the chain below it with it, up to a running one */
        int found = 0;
        while (run_pop(L))
          if ((found = get_bool(L, R_CUR, K_RUNNING))) break;
        if (!found) break;
        ctx |= RUN_RESUMED;
      }
      if (!fresh && !(ctx & RUN_RESUMED) && get_bool(L, R_CUR, K_CHAINEDTO))
        set_nil(L, R_CUR, K_CHAINEDTO);
      lua_pushvalue(L, UV(U_SEGMENT));
      lua_pushvalue(L, R_CUR);
      lua_pushboolean(L, ctx & RUN_PLAIN);
      lua_pushboolean(L, ctx & RUN_RESUMED);
      lua_pushboolean(L, fresh);
      ctx &= RUN_NRET;
      status = lua_pcallk(L, 4, 1, R_MSGH, ctx, run_k);
    }
    while (status != LUA_OK) {  /* the Failure becomes the result; go on */
      if (retried && overflowed(L, status)) {
        /* retrying cannot get further at this depth: fail the caller (a
        ** callback one level up, which has room) instead of looping */
        lua_Integer sp = lua_tointeger(L, R_SP);
        set_bool(L, R_CUR, K_RUNNING, 0);
        for (; sp > 0; sp--) {  /* the stacked ones too */
          lua_rawgeti(L, R_STACK, sp);
          set_bool(L, lua_gettop(L), K_RUNNING, 0);
          lua_pop(L, 1);
        }
        DSTATE(L)->cdepth--;
        return lua_error(L);
      }
      retried = 1;
      lua_pushvalue(L, UV(U_WRAP_FAILURE));
      lua_insert(L, -2);
      lua_call(L, 1, 1);
      lua_pushvalue(L, UV(K_RESULT));
      lua_insert(L, -2);
      lua_rawset(L, R_CUR);
      lua_pushvalue(L, UV(U_SEGMENT));
      lua_pushvalue(L, R_CUR);
      status = lua_pcallk(L, 1, 1, R_MSGH, ctx, run_k);
    }
    status = -1;
    retried = 0;
    if (!lua_isnil(L, -1)) {  /* go on with the next Deferred; come back later */
      lua_Integer sp = lua_tointeger(L, R_SP) + 1;
      if (lua_isnil(L, R_STACK)) {
        lua_newtable(L);
        lua_replace(L, R_STACK);
      }
      lua_pushvalue(L, R_CUR);
      lua_rawseti(L, R_STACK, sp);
      lua_pushinteger(L, sp);
      lua_replace(L, R_SP);
      lua_replace(L, R_CUR);
    } else {
      lua_pop(L, 1);
      if (!run_pop(L)) break;
      if (get_bool(L, R_CUR, K_RUNNING)) ctx |= RUN_RESUMED;
    }
  }
  struct dstate *st = DSTATE(L);
  lua_settop(L, 1);
  if (--st->cdepth == 0 && !st->draining && st->q_head <= st->q_tail) {
    st->draining = 1;  /* the outermost run: the runs it put off go now */
    return drain_loop(L, LUA_OK, ctx & RUN_NRET);
  }
  return (int)(ctx & RUN_NRET);
}

static int d_run(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  return run_impl(L, lua_toboolean(L, 2) ? RUN_PLAIN : 0);
}

/* The Lua version of a method, for every case but the common one. */
static int slow_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

static int slow(lua_State *L, int fn) {
  int n = lua_gettop(L);
  lua_pushvalue(L, UV(fn));
  lua_insert(L, 1);
  lua_callk(L, n, LUA_MULTRET, 0, slow_k);
  return lua_gettop(L);
}

static int debugging(lua_State *L) {
  return DSTATE(L)->debugging;
}

/* cdepth([depth, draining]) -> depth, draining: the runs under way and
** whether the outermost is draining the runs put off; with arguments, sets
** both first. inlineCallbacks' resume (defer.lua's run_co) takes back what a
** coroutine that yields inside a callback leaves open, and gives it back
** when the coroutine goes on: an abandoned coroutine must not leave them
** raised (40 of them would put off every later run for ever). */
static int d_cdepth(lua_State *L) {
  struct dstate *st = DSTATE(L);
  if (!lua_isnone(L, 1)) {
    lua_Integer depth = luaL_checkinteger(L, 1);
    luaL_argcheck(L, depth >= 0 && depth <= INT_MAX, 1, "out of range");
    st->cdepth = (int)depth;
    st->draining = lua_toboolean(L, 2);
  }
  lua_pushinteger(L, st->cdepth);
  lua_pushboolean(L, st->draining);
  return 2;
}

/* setDebugging(on) */
static int d_set_debugging(lua_State *L) {
  DSTATE(L)->debugging = lua_toboolean(L, 1);
  return 0;
}

/* Whether the value at index 1 is a Deferred (a table whose metatable is
** the class, or a subclass): the methods' self. The class's address is
** kept in dstate: object_kind's own check costs about 420 instructions
** more per chain of scripts/bench/deferred (five method calls). */
static int is_deferred_self(lua_State *L) {
  int r;
  if (lua_type(L, 1) != LUA_TTABLE || !lua_getmetatable(L, 1)) return 0;
  r = lua_topointer(L, -1) == DSTATE(L)->deferred_mt;
  lua_pop(L, 1);
  return r || object_kind(L, 1) == 2;
}

/* An _n that no chain can reach was overwritten by Lua code: say so rather
** than walk or index that far. */
static lua_Integer check_n(lua_State *L, lua_Integer n) {
  if (n < 0 || n > MAX_N) luaL_error(L, "corrupt Deferred: its _n field is %I", (LUAI_UACINT)n);
  return n;
}

/* d:callback(result) */
static int d_callback(lua_State *L) {
  lua_Integer n, paused;
  if (lua_gettop(L) > 2 || !is_deferred_self(L)) return slow(L, U_SLOW_CALLBACK);
  if (get_bool(L, 1, K_CALLED) || value_kind(L, 2) != 0 || debugging(L))
    return slow(L, U_SLOW_CALLBACK);
  lua_settop(L, 2);
  set_bool(L, 1, K_CALLED, 1);
  set_value(L, 1, K_RESULT, 2);
  lua_pushvalue(L, UV(K_N));
  int tn = lua_rawget(L, 1);
  lua_pushvalue(L, UV(K_PAUSED));
  int tp = lua_rawget(L, 1);
  n = tn == LUA_TNIL ? 0 : check_n(L, lua_tointeger(L, 3));
  paused = tp == LUA_TNIL ? 0 : lua_tointeger(L, 4);
  if (n == 0) return 0;
  /* not called until now: not running, not chained, _h 0 */
  return run_impl(L, paused == 0 ? RUN_PLAIN | RUN_FRESH : RUN_PLAIN);
}

/* push the value at idx, or false for idx 0 */
static void push_or_false(lua_State *L, int idx) {
  if (idx) lua_pushvalue(L, idx);
  else lua_pushboolean(L, 0);
}

/* append (cb, eb, no arguments) (cb index 0: false; eb index 0: none) and
** run if fired; returns self. The slots past _n hold nil or false, so the
** errback and arguments slots are written only when they hold something;
** the callback slot always is (nil there marks a consumed entry). */
static int add(lua_State *L, int cb, int eb) {
  lua_Integer n;
  int called;
  lua_pushvalue(L, UV(K_N));
  int tn = lua_rawget(L, 1);
  lua_pushvalue(L, UV(K_CALLED));
  lua_rawget(L, 1);
  n = tn == LUA_TNIL ? 0 : check_n(L, lua_tointeger(L, -2));
  called = lua_toboolean(L, -1);
  push_or_false(L, cb); lua_rawseti(L, 1, n + 1);
  if (eb) { lua_pushvalue(L, eb); lua_rawseti(L, 1, n + 2); }
  set_int(L, 1, K_N, n + 3);
  lua_settop(L, 1);
  if (called) return run_impl(L, RUN_NRET);
  return 1;
}

static int fast_args(lua_State *L, int n) {
  return lua_gettop(L) == n && is_deferred_self(L);
}

static int d_addCallback(lua_State *L) {
  if (!fast_args(L, 2) || lua_type(L, 2) != LUA_TFUNCTION) return slow(L, U_SLOW_ADDCALLBACK);
  return add(L, 2, 0);
}

static int d_addErrback(lua_State *L) {
  if (!fast_args(L, 2) || lua_type(L, 2) != LUA_TFUNCTION) return slow(L, U_SLOW_ADDERRBACK);
  return add(L, 0, 2);
}

static int d_addBoth(lua_State *L) {
  if (!fast_args(L, 2) || lua_type(L, 2) != LUA_TFUNCTION) return slow(L, U_SLOW_ADDBOTH);
  return add(L, 2, 2);
}

static int d_addCallbacks(lua_State *L) {
  int top = lua_gettop(L);
  if (top < 2 || top > 3 || lua_type(L, 2) != LUA_TFUNCTION ||
      (top == 3 && !lua_isnil(L, 3) && lua_type(L, 3) != LUA_TFUNCTION) || !is_deferred_self(L))
    return slow(L, U_SLOW_ADDCALLBACKS);
  return add(L, 2, top == 3 && !lua_isnil(L, 3) ? 3 : 0);
}

/* Deferred.__new(cls, canceller?): a plain Deferred, its table sized for
** three callbacks and the fields a Deferred's life writes (called, result,
** _n, _running), so that it never grows; every absent field reads as its
** class default. Subclasses and anything unusual go to Lua. */
static int d_new(lua_State *L) {
  int top = lua_gettop(L), canceller;
  if (top > 2 || !lua_rawequal(L, 1, UV(U_DEFERRED)) || debugging(L)) return slow(L, U_SLOW_NEW);
  canceller = top == 2 && !lua_isnil(L, 2);
  if (canceller && lua_type(L, 2) != LUA_TFUNCTION) return slow(L, U_SLOW_NEW);
  lua_createtable(L, 9, 4 + canceller);
  if (canceller) set_value(L, top + 1, K_CANCELLER, 2);
  lua_pushvalue(L, UV(U_DEFERRED));
  lua_setmetatable(L, -2);
  return 1;
}

/* succeed(result): a fired Deferred; Failures and Deferreds go to Lua.
** Only called and result are set: every other field is its class default
** (a callback added later makes room for _n). */
static int d_succeed(lua_State *L) {
  int top = lua_gettop(L), t = lua_type(L, 1);
  if (top > 1 || ((t == LUA_TTABLE || t == LUA_TUSERDATA) && object_kind(L, 1) != 0) ||
      debugging(L))
    return slow(L, U_SLOW_SUCCEED);
  lua_createtable(L, 0, 2);  /* at top + 1; returned as the top */
  lua_pushvalue(L, UV(K_CALLED)); lua_pushboolean(L, 1); lua_rawset(L, -3);
  if (t > LUA_TNIL) {  /* not nil nor none */
    lua_pushvalue(L, UV(K_RESULT)); lua_pushvalue(L, 1); lua_rawset(L, -3);
  }
  lua_pushvalue(L, UV(U_DEFERRED));
  lua_setmetatable(L, -2);
  return 1;
}

/* await(d) inside an inlineCallbacks function: a non-Deferred comes back as
** is and a settled Deferred (fired, nothing queued, not paused or running,
** no unhandled Failure) gives its result at once; the rest is Lua's.
** The hot path reads what it needs onto the stack and returns its top
** (nothing is popped): 1 d, 2 ic[1], 3 d's metatable, 4 called, 5 _n,
** 6 paused, 7 _dbg, 8 "result", 9 the result. */
static int d_await(lua_State *L) {
  int tn, tp, td;
  if (lua_gettop(L) != 1) return slow(L, U_SLOW_AWAIT);
  if (lua_rawgeti(L, UV(U_IC), 1) == LUA_TNIL) {
    lua_pop(L, 1);
    return slow(L, U_SLOW_AWAIT);
  }
  /* a plain Deferred first; value_kind for the rest (subclasses, and the
  ** values returned as they are) */
  if (!lua_getmetatable(L, 1) ||
      (lua_topointer(L, 3) != lua_topointer(L, UV(U_DEFERRED)) && value_kind(L, 1) != 2)) {
    lua_pushvalue(L, 1);
    return 1;
  }
  if (lua_type(L, 1) != LUA_TTABLE) {  /* a userdata given the class (debug.setmetatable) */
    lua_settop(L, 1);
    return slow(L, U_SLOW_AWAIT);
  }
  /* _running needs no look: a running Deferred has _n > 0 until it stops
  ** running; an absent counter reads as its class default 0 (nil is told
  ** by its type, as lua_tointeger's conversion attempt costs more) */
  lua_pushvalue(L, UV(K_CALLED));
  lua_rawget(L, 1);
  lua_pushvalue(L, UV(K_N));
  tn = lua_rawget(L, 1);
  lua_pushvalue(L, UV(K_PAUSED));
  tp = lua_rawget(L, 1);
  lua_pushvalue(L, UV(K_DBG));
  td = lua_rawget(L, 1);
  if (!lua_toboolean(L, 4) || (tn != LUA_TNIL && lua_tointeger(L, 5) != 0) ||
      (tp != LUA_TNIL && lua_tointeger(L, 6) != 0) || (td != LUA_TNIL && lua_toboolean(L, 7))) {
    lua_settop(L, 1);
    return slow(L, U_SLOW_AWAIT);
  }
  lua_pushvalue(L, UV(K_RESULT));
  lua_pushvalue(L, 8);
  if (lua_rawget(L, 1) != LUA_TNIL) {  /* d.result = nil (absent: nothing to do) */
    lua_pushvalue(L, 8);
    lua_pushnil(L);
    lua_rawset(L, 1);
  }
  return 1;
}

static void push_upvalues(lua_State *L, int cfg, int state, int with_segment) {
  int i;
  for (i = 1; i < U_SEGMENT; i++) {
    if (i == U_STATE) lua_pushvalue(L, state);
    else lua_getfield(L, cfg, CFG_NAMES[i]);
  }
  if (with_segment) lua_getfield(L, cfg, "_segment");
  else lua_pushnil(L);
  for (i = U_SEGMENT + 1; i <= U_LAST; i++) lua_pushstring(L, KEY_NAMES[i]);
}

/* core.defer_bind(cfg) -> {run, segment, callback, addCallback, addErrback,
** addBoth, addCallbacks, succeed} */
static int defer_bind(lua_State *L) {
  static const struct { const char *name; lua_CFunction fn; } FNS[] = {
    { "run", d_run }, { "callback", d_callback }, { "addCallback", d_addCallback },
    { "addErrback", d_addErrback }, { "addBoth", d_addBoth },
    { "addCallbacks", d_addCallbacks }, { "succeed", d_succeed },
    { "await", d_await }, { "__new", d_new }, { "cdepth", d_cdepth }, { "setDebugging", d_set_debugging },
  };
  struct dstate *st;
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_checkstack(L, U_LAST + 8, "defer_bind");  /* the closures' upvalues */
  for (i = 1; i < U_SEGMENT; i++) {
    int t;
    if (i == U_STATE) continue;
    int want = i == U_DEFERRED || i == U_FAILURE || i == U_KIND || i == U_IC || i == U_RUNQ
             ? LUA_TTABLE
             : i == U_CONTINUE || i == U_RESUME || i == U_FIRE ? -1 : LUA_TFUNCTION;
    t = lua_getfield(L, 1, CFG_NAMES[i]);
    lua_pop(L, 1);
    if (t == LUA_TNIL) return luaL_error(L, "defer_bind: cfg.%s is missing", CFG_NAMES[i]);
    if (want >= 0 && t != want)
      return luaL_error(L, "defer_bind: cfg.%s must be a %s", CFG_NAMES[i], lua_typename(L, want));
  }
  lua_newtable(L);  /* 2: result */
  st = lua_newuserdatauv(L, sizeof *st, 0);  /* 3 */
  st->cdepth = 0;
  st->debugging = 0;
  st->q_head = 1;
  st->q_tail = 0;
  st->draining = 0;
  lua_getfield(L, 1, CFG_NAMES[U_DEFERRED]);
  st->deferred_mt = lua_topointer(L, -1);  /* anchored by the closures' upvalues */
  lua_pop(L, 1);
  push_upvalues(L, 1, 3, 0);
  lua_pushcclosure(L, segment, U_LAST);
  lua_pushvalue(L, -1);
  lua_setfield(L, 1, "_segment");
  lua_setfield(L, 2, "segment");
  for (i = 0; i < (int)(sizeof FNS / sizeof FNS[0]); i++) {
    push_upvalues(L, 1, 3, 1);
    lua_pushcclosure(L, FNS[i].fn, U_LAST);
    if (FNS[i].fn == d_run) {  /* runq[0]: what drain_loop calls */
      lua_getfield(L, 1, CFG_NAMES[U_RUNQ]);
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, 0);
      lua_pop(L, 1);
    }
    lua_setfield(L, 2, FNS[i].name);
  }
  lua_pushnil(L);
  lua_setfield(L, 1, "_segment");
  lua_settop(L, 2);
  return 1;
}

void braid_open_deferred(lua_State *L) {
  lua_pushcfunction(L, defer_bind);
  lua_setfield(L, -2, "defer_bind");
}
