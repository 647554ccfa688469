/*
** timers.c: callLater and DelayedCall.
**
** Pending calls live in one binary min-heap ordered by (deadline, seq):
** calls with the same deadline run in scheduling order, and reset/delay
** take a new seq (they count as rescheduling). Heap entries carry their
** keys inline so sifting compares without touching the calls themselves;
** each call knows its heap index. cancel is O(1) and touches the call
** alone: it marks it cancelled, lets its function and arguments go, and
** counts one more dead entry; the heap entry (and the call's anchor) stay.
** Dead entries are dropped, their anchors released, when they reach the
** top, and the heap is compacted (filter + Floyd heapify, O(n)) on the
** next loop turn once they outnumber the live ones, as Twisted's
** runUntilCurrent does, or before the heap would grow for them: it never
** holds more than twice the pending calls. When no call is left pending,
** the heap is emptied and the anchor table replaced at once (O(1)), so the
** next calls are anchored in order again.
**
** A DelayedCall is a userdata whose user values are the function and its
** arguments. While in the heap it is anchored in a registry table
** (anchors), so losing the last Lua reference cancels nothing.
*/
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "braid.h"

#define DC_META "braid.DelayedCall"
#define NOT_IN_HEAP UINT32_MAX

enum { DC_PENDING, DC_CALLED, DC_CANCELLED };

struct dcall {
  double deadline;  /* monotonic seconds */
  uint64_t seq;
  uint32_t idx;     /* position in the heap, or NOT_IN_HEAP */
  int ref;          /* anchor while pending */
  int nuv;          /* user values: function + arguments */
  int state;
};

struct hentry {
  double deadline;
  uint64_t seq;
  struct dcall *dc;
};

static struct {
  struct hentry *v;
  uint32_t n, cap;
  uint32_t dead;    /* entries whose call was cancelled (still anchored) */
  uint64_t seq;
  int anchors_ref;  /* registry ref of the anchor table */
  int ref_max;      /* the highest anchor ref handed out since the table was made */
} H = { NULL, 0, 0, 0, 0, LUA_NOREF, 0 };

static inline int hless(const struct hentry *a, const struct hentry *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline void hset(uint32_t i, struct hentry e) {
  H.v[i] = e;
  if (e.dc) e.dc->idx = i;
}

static void sift_up(uint32_t i, struct hentry e) {
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!hless(&e, &H.v[p])) break;
    hset(i, H.v[p]);
    i = p;
  }
  hset(i, e);
}

/* track: keep each moved entry's idx (heap_compact passes 0 and sets them
** all in one pass afterwards) */
static inline void sift_down_(uint32_t i, struct hentry e, int track) {
  uint32_t n = H.n;
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && hless(&H.v[c + 1], &H.v[c])) c++;
    if (!hless(&H.v[c], &e)) break;
    if (track) hset(i, H.v[c]);
    else H.v[i] = H.v[c];
    i = c;
  }
  if (track) hset(i, e);
  else H.v[i] = e;
}

static void sift_down(uint32_t i, struct hentry e) { sift_down_(i, e, 1); }

static void heap_compact(lua_State *L);

/* 0, or -1 when out of memory */
static int heap_push(lua_State *L, struct dcall *dc) {
  if (H.n == H.cap && H.dead > H.n / 2) heap_compact(L); /* room without growing */
  if (H.n == H.cap) {
    uint32_t cap = H.cap ? H.cap * 2 : 64;
    struct hentry *v = realloc(H.v, cap * sizeof *v);
    if (!v) return -1;
    H.v = v;
    H.cap = cap;
  }
  struct hentry e = { dc->deadline, dc->seq, dc };
  sift_up(H.n++, e);
  return 0;
}

static void heap_remove(struct dcall *dc) {
  uint32_t i = dc->idx;
  if (i == NOT_IN_HEAP || i >= H.n || H.v[i].dc != dc) return;
  dc->idx = NOT_IN_HEAP;
  struct hentry last = H.v[--H.n];
  if (i == H.n) return;
  if (i > 0 && hless(&last, &H.v[(i - 1) / 2])) sift_up(i, last);
  else sift_down(i, last);
}

static inline int dead(const struct hentry *e) {
  return e->dc->state != DC_PENDING;
}

/* Let go of a dead entry's call (pushes nothing: luaL_unref and these
** rawgeti/pop do not allocate, so this cannot raise). */
static void release(lua_State *L, struct dcall *dc) {
  dc->idx = NOT_IN_HEAP;
  if (dc->ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, H.anchors_ref);
  luaL_unref(L, -1, dc->ref);
  lua_pop(L, 1);
  dc->ref = LUA_NOREF;
}

static void heap_pop_dead_top(lua_State *L) {
  release(L, H.v[0].dc);
  H.dead--;
  struct hentry last = H.v[--H.n];
  if (H.n > 0) sift_down(0, last);
}

/* Drop every dead entry, releasing its call, and rebuild the heap in O(n):
** filter and heapify the keys alone, then set each call's idx once (the
** calls are scattered in memory: ask for them a few entries ahead). */
static void heap_compact(lua_State *L) {
  enum { AHEAD = 16 };
  uint32_t j = 0;
  for (uint32_t i = 0; i < H.n; i++) {
    if (i + AHEAD < H.n) __builtin_prefetch(H.v[i + AHEAD].dc, 1);
    if (dead(&H.v[i])) release(L, H.v[i].dc);
    else H.v[j++] = H.v[i];
  }
  H.n = j;
  H.dead = 0;
  for (uint32_t i = j / 2; i-- > 0;) sift_down_(i, H.v[i], 0);
  for (uint32_t i = 0; i < j; i++) {
    if (i + AHEAD < j) __builtin_prefetch(H.v[i + AHEAD].dc, 1);
    H.v[i].dc->idx = i;
  }
  if (H.cap > 1024 && H.n < H.cap / 4) { /* give memory back */
    struct hentry *v = realloc(H.v, (H.cap / 2) * sizeof *v);
    if (v) { H.v = v; H.cap /= 2; }
  }
}

/* Compact when the dead outnumber the living (once per loop turn). */
static void heap_maybe_compact(lua_State *L) {
  if (H.dead > 64 && H.dead > H.n / 2) heap_compact(L);
}

/* Nothing pending: drop every (dead) entry. A large anchor table is
** replaced at once (the registry slot stays), the calls left behind being
** all fired or cancelled: nothing reads their idx or ref again. A small
** one keeps its table and releases each entry. The new table is made
** first: making it can run the collector, whose finalizers may schedule or
** cancel calls, so the heap is checked again after (a call scheduled there
** was lost, its idx left stale). Can raise (memory) before changing
** anything. */
enum { RESET_MIN = 64 };
static void heap_reset(lua_State *L) {
  if (H.ref_max > RESET_MIN) {
    lua_newtable(L);
    if (H.n == H.dead) {
      lua_rawseti(L, LUA_REGISTRYINDEX, H.anchors_ref);
      H.ref_max = 0;
      H.n = H.dead = 0;
      return;
    }
    lua_pop(L, 1);
    heap_compact(L);  /* a finalizer scheduled a call: keep it */
    return;
  }
  for (uint32_t i = 0; i < H.n; i++) release(L, H.v[i].dc);  /* allocates nothing */
  H.n = H.dead = 0;
}

/* The DelayedCall metatable of the state that opened the timers first: a
** pointer compare instead of luaL_checkudata's registry lookup by name. */
static const void *dc_mt;

/* The DelayedCall at i, or NULL: this state's metatable told by its
** address, any other state's by name. */
static struct dcall *dc_test(lua_State *L, int i) {
  void *p = lua_touserdata(L, i);
  if (p && lua_getmetatable(L, i)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == dc_mt) return p;
  }
  return luaL_testudata(L, i, DC_META);
}

static struct dcall *dc_check(lua_State *L, int i) {
  struct dcall *dc = dc_test(L, i);
  return dc ? dc : luaL_checkudata(L, i, DC_META); /* raises */
}

static void raise_state(lua_State *L, struct dcall *dc) {
  braid_raise(L, dc->state == DC_CALLED ? "AlreadyCalled" : "AlreadyCancelled", NULL);
}

static double check_delay(lua_State *L, int i, const char *what) {
  double d = luaL_checknumber(L, i);
  if (!(d >= 0) || d == HUGE_VAL)  /* also refuses NaN */
    luaL_argerror(L, i, lua_pushfstring(L, "%s must be a finite number >= 0, got %f", what, d));
  return d;
}

static int is_callable(lua_State *L, int i) {
  if (lua_type(L, i) == LUA_TFUNCTION) return 1;
  if (luaL_getmetafield(L, i, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* callLater(delay, f, ...) -> DelayedCall
** upvalue 1: the DelayedCall metatable */
static int l_callLater(lua_State *L) {
  double delay = check_delay(L, 1, "delay");
  if (!is_callable(L, 2))
    return luaL_argerror(L, 2, lua_pushfstring(L, "function expected, got %s", luaL_typename(L, 2)));
  int top = lua_gettop(L);
  int nuv = top - 1;
  /* a userdata holds fewer than USHRT_MAX user values */
  if (nuv >= USHRT_MAX - 1)
    return luaL_argerror(L, top, lua_pushfstring(L, "too many arguments (at most %d extra)", USHRT_MAX - 3));
  struct dcall *dc = lua_newuserdatauv(L, sizeof *dc, nuv);
  dc->deadline = braid_monotonic() + delay;
  dc->seq = H.seq++;
  dc->idx = NOT_IN_HEAP;
  dc->ref = LUA_NOREF;
  dc->nuv = nuv;
  dc->state = DC_PENDING;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setmetatable(L, -2);
  for (int i = 1; i <= nuv; i++) {
    lua_pushvalue(L, i + 1);
    lua_setiuservalue(L, -2, i);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, H.anchors_ref);
  lua_pushvalue(L, -2);
  dc->ref = luaL_ref(L, -2);  /* anchored first: a heap entry always is */
  if (dc->ref > H.ref_max) H.ref_max = dc->ref;
  if (heap_push(L, dc) != 0) {
    luaL_unref(L, -1, dc->ref);
    dc->ref = LUA_NOREF;
    return luaL_error(L, "not enough memory");
  }
  lua_pop(L, 1);
  braid_work(1);
  return 1;
}

static void reschedule(lua_State *L, struct dcall *dc, double deadline) {
  heap_remove(dc);
  dc->deadline = deadline;
  dc->seq = H.seq++;
  heap_push(L, dc); /* cannot fail: the slot it left is free */
}

static int l_cancel(lua_State *L) {
  struct dcall *dc = dc_check(L, 1);
  if (dc->state != DC_PENDING) raise_state(L, dc);
  dc->state = DC_CANCELLED;  /* all of it before anything that may collect */
  H.dead++;
  braid_work(-1);
  for (int i = 1; i <= dc->nuv; i++) { /* let the function and args go */
    lua_pushnil(L);
    lua_setiuservalue(L, 1, i);
  }
  if (H.dead == H.n) heap_reset(L); /* the last pending call */
  return 0;
}

static int l_delay(lua_State *L) {
  struct dcall *dc = dc_check(L, 1);
  if (dc->state != DC_PENDING) raise_state(L, dc); /* first, whatever d is, as Twisted's */
  double d = luaL_checknumber(L, 2);
  luaL_argcheck(L, isfinite(d), 2, lua_pushfstring(L, "seconds must be a finite number, got %f", d));
  luaL_argcheck(L, isfinite(dc->deadline + d), 2, "the new time is out of range");
  reschedule(L, dc, dc->deadline + d);
  return 0;
}

static int l_reset(lua_State *L) {
  struct dcall *dc = dc_check(L, 1);
  if (dc->state != DC_PENDING) raise_state(L, dc); /* first, whatever d is, as Twisted's */
  double d = check_delay(L, 2, "seconds");
  reschedule(L, dc, braid_monotonic() + d);
  return 0;
}

/* reactor.seconds() - monotonic, from one wall reading between two
** monotonic ones taken close together: a preemption between the reads
** would otherwise shift getTime() by however long it lasted. */
static double wall_offset(void) {
  double w = 0, a = 0, b = 0;
  for (int i = 0; i < 8; i++) {
    a = braid_monotonic();
    w = braid_walltime();
    b = braid_monotonic();
    if (b - a < 20e-6) break;
  }
  return w - (a + b) / 2;
}

static double get_time(struct dcall *dc) {
  return dc->deadline + wall_offset();
}

static int l_getTime(lua_State *L) {
  lua_pushnumber(L, get_time(dc_check(L, 1)));
  return 1;
}

static int l_active(lua_State *L) {
  lua_pushboolean(L, dc_check(L, 1)->state == DC_PENDING);
  return 1;
}

/* methods (upvalue 1), then the fields called, cancelled, time, func, args */
static int dc_index(lua_State *L) {
  lua_pushvalue(L, 2); /* methods first: dc:cancel() is the hot lookup (each checks self) */
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  struct dcall *dc = dc_check(L, 1);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k) {
    if (strcmp(k, "called") == 0) { lua_pushboolean(L, dc->state == DC_CALLED); return 1; }
    if (strcmp(k, "cancelled") == 0) { lua_pushboolean(L, dc->state == DC_CANCELLED); return 1; }
    if (strcmp(k, "time") == 0) { lua_pushnumber(L, get_time(dc)); return 1; }
    if (strcmp(k, "func") == 0) { lua_getiuservalue(L, 1, 1); return 1; }
    if (strcmp(k, "args") == 0) {
      int n = dc->nuv - 1;
      lua_createtable(L, n > 0 ? n : 0, 1);
      for (int i = 1; i <= n; i++) {
        lua_getiuservalue(L, 1, i + 1);
        lua_rawseti(L, -2, i);
      }
      lua_pushinteger(L, n);
      lua_setfield(L, -2, "n");
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

static int dc_tostring(lua_State *L) {
  struct dcall *dc = dc_check(L, 1);
  const char *st = dc->state == DC_CALLED ? "called" : dc->state == DC_CANCELLED ? "cancelled" : NULL;
  if (st) lua_pushfstring(L, "<DelayedCall %p %s>", (void *)dc, st);
  else lua_pushfstring(L, "<DelayedCall %p [%fs]>", (void *)dc, dc->deadline - braid_monotonic());
  return 1;
}

static int l_getDelayedCalls(lua_State *L) {
  lua_createtable(L, (int)H.n, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, H.anchors_ref);
  lua_Integer k = 0;
  for (uint32_t i = 0; i < H.n; i++) {
    if (dead(&H.v[i])) continue;
    lua_rawgeti(L, -1, H.v[i].dc->ref);
    lua_rawseti(L, -3, ++k);
  }
  lua_pop(L, 1);
  return 1;
}

static int l_pending(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)(H.n - H.dead));
  return 1;
}

double braid_timers_next(lua_State *L) {
  heap_maybe_compact(L);
  while (H.n > 0 && dead(&H.v[0])) heap_pop_dead_top(L);
  if (H.n == 0) return -1;
  double d = H.v[0].deadline - braid_monotonic();
  return d > 0 ? d : 0;
}

/* Run the calls due now. Calls scheduled (or rescheduled) while this runs
** are due at the earliest at `now` (the clock only goes forward); those due
** exactly at `now` are left for the next iteration, as Twisted's
** runUntilCurrent leaves its new calls: an entry with seq >= barrier is new,
** and since the heap orders by (deadline, seq) every older entry due then
** has already been popped when one reaches the top. A pending call moved
** into the past (delay(-s)) runs in this pass, as Twisted's does.
** Requires: called protected, on the loop's thread. */
int braid_timers_run(lua_State *L) {
  if (H.n == 0) return 0;
  double now = braid_monotonic();
  uint64_t barrier = H.seq;
  int ran = 0;
  lua_settop(L, 0);
  braid_push_msgh(L);
  int msgh = lua_gettop(L);
  while (H.n > 0) {
    struct hentry *top = &H.v[0];
    if (dead(top)) { heap_pop_dead_top(L); continue; }
    if (top->deadline > now || (top->seq >= barrier && top->deadline == now)) break;
    struct dcall *dc = top->dc;
    heap_remove(dc);
    dc->state = DC_CALLED;
    /* the anchor table is fetched per call: a call that cancels the last
    ** pending one replaces it (heap_reset) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, H.anchors_ref);
    lua_rawgeti(L, -1, dc->ref);
    luaL_unref(L, -2, dc->ref);
    lua_remove(L, -2);
    dc->ref = LUA_NOREF;
    braid_work(-1);
    int nuv = dc->nuv;
    luaL_checkstack(L, nuv + 2, "too many arguments");
    int ud = lua_gettop(L);
    for (int i = 1; i <= nuv; i++) lua_getiuservalue(L, ud, i);
    int st = lua_pcall(L, nuv - 1, 0, msgh);
    if (st != LUA_OK) braid_report_error(L);
    lua_settop(L, msgh);
    ran++;
  }
  /* none left pending: the next calls start on a fresh anchor table, in order */
  if (ran && H.n == H.dead && H.ref_max > RESET_MIN) heap_reset(L);
  lua_settop(L, 0);
  return ran;
}

/* DelayedCalls order by when they are due, as Twisted's __lt__/__le__ (by
** getTime(); a DelayedCall compared with anything else raises, as Lua does
** for values it cannot compare). */
static const char *operand_type(lua_State *L, int i) {
  if (luaL_getmetafield(L, i, "__name") == LUA_TSTRING) return lua_tostring(L, -1);
  return luaL_typename(L, i);
}

static void dc_operands(lua_State *L, struct dcall **a, struct dcall **b) {
  *a = dc_test(L, 1);
  *b = dc_test(L, 2);
  if (!*a || !*b) {
    const char *t1 = operand_type(L, 1), *t2 = operand_type(L, 2);
    luaL_error(L, "attempt to compare %s with %s", t1, t2);
  }
}

static int dc_lt(lua_State *L) {
  struct dcall *a, *b;
  dc_operands(L, &a, &b);
  lua_pushboolean(L, a->deadline < b->deadline);
  return 1;
}

static int dc_le(lua_State *L) {
  struct dcall *a, *b;
  dc_operands(L, &a, &b);
  lua_pushboolean(L, a->deadline <= b->deadline);
  return 1;
}

static const luaL_Reg dc_methods[] = {
  { "cancel", l_cancel },
  { "delay", l_delay },
  { "reset", l_reset },
  { "getTime", l_getTime },
  { "active", l_active },
  { NULL, NULL }
};

static int timers_gc(lua_State *L) {
  braid_check_finalizer(L);
  free(H.v);
  H.v = NULL;
  H.n = H.cap = H.dead = 0;
  H.anchors_ref = LUA_NOREF;
  dc_mt = NULL;
  return 0;
}

void braid_open_timers(lua_State *L) {
  /* core table on top */
  if (H.anchors_ref == LUA_NOREF) {
    lua_newtable(L);
    H.anchors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newuserdatauv(L, 1, 0); /* frees the heap when the state closes */
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, timers_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "braid.timers.sentinel");
  }
  if (luaL_newmetatable(L, DC_META)) {
    if (!dc_mt) dc_mt = lua_topointer(L, -1);
    luaL_newlib(L, dc_methods);
    lua_pushcclosure(L, dc_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, dc_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, dc_lt);
    lua_setfield(L, -2, "__lt");
    lua_pushcfunction(L, dc_le);
    lua_setfield(L, -2, "__le");
    lua_pushliteral(L, "DelayedCall");
    lua_setfield(L, -2, "__name");
  }
  lua_pushcclosure(L, l_callLater, 1);
  lua_setfield(L, -2, "callLater");
  lua_pushcfunction(L, l_getDelayedCalls);
  lua_setfield(L, -2, "getDelayedCalls");
  lua_pushcfunction(L, l_pending);
  lua_setfield(L, -2, "timer_count");
}
