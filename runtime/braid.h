/*
** braid.h: declarations shared by the runtime's C files.
**
** Invariants:
** - There is one reactor per process (struct braid_loop, braid_loop()). It
**   belongs to the Lua state that first loaded braid.core; other states
**   (thread pool workers) never touch it.
** - C never keeps a lua_State* from a call. Loop callbacks run on loop->L,
**   a Lua thread braid owns and anchors in the registry.
** - Every call from a libevent callback into Lua goes through braid_pcall
**   (or a protected trampoline): a Lua error never longjmps across
**   event_base_loop's frames.
*/
#ifndef BRAID_H
#define BRAID_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <lauxlib.h>

struct event_base;
struct event;

#define BRAID_VERSION "0.1.0"

struct braid_timers; /* timers.c */

struct braid_loop {
  struct event_base *base;
  lua_State *L;          /* the braid-owned thread callbacks run on */
  lua_State *owner;      /* main thread of the owning state */
  int thread_ref;        /* registry ref anchoring L */
  int msgh_ref;          /* message handler (Lua: failure.msgh) or LUA_NOREF */
  int errh_ref;          /* error reporter (Lua: log.reportError) or LUA_NOREF */
  int turn_ref;          /* per-turn hook, run when wake was asked */
  struct event *wake_ev; /* timer event bounding the wait of an iteration */
  int wake_armed;        /* wake_ev is added and has not fired */
  int in_loop;           /* inside run/iterate: nesting is refused */
  int running;           /* inside run() */
  int stop_flag;         /* leave run() after this iteration */
  int wake_flag;         /* run the turn hook and do not block */
  int has_run;           /* run() or iterate() was called: the script drives the loop */
  long work;             /* live things that keep a script's reactor running */
  unsigned turns;        /* loop iterations begun (wraps): tcp.c tells "this turn" by it */
  char backend[16];      /* requested backend ("" = libevent's choice) */
};

/* alloc.c */
/* A new Lua state with braid's allocator (size classes for small blocks,
** malloc for the rest; malloc only under ASan or BRAID_ALLOC=system),
** lauxlib's panic and warning behaviour. NULL when out of memory. */
lua_State *braid_new_state(void);
/* lua_close, then free the state's allocator pool. */
void braid_close_state(lua_State *L);
void braid_pool_free(void *pool);

/* loop.c */
struct braid_loop *braid_loop(void);
/* Keep the library holding this code loaded for good: a thread that may
** outlive the Lua state (lua5.4 unloads braid/core.so when it closes)
** calls this before it starts. */
void braid_pin_library(void);
/* The event base, created on first use with the requested backend.
** Raises a Lua error on failure. */
struct event_base *braid_base(lua_State *L);
/* lua_pcall with the loop's message handler; on error the error is
** reported (logged) and popped, and the status returned. Results are left
** on the stack only on success. */
int braid_pcall(lua_State *L, int nargs, int nresults);
/* Push the message handler callbacks run under (a traceback maker). */
void braid_push_msgh(lua_State *L);
/* Report the error object on top of the stack (pops it). Never raises. */
void braid_report_error(lua_State *L);
/* Count things that keep the reactor busy (timers, ports, connections,
** readers): braid runs a script's reactor when this is > 0. */
void braid_work(long delta);
/* Monotonic and wall-clock time in seconds. */
double braid_monotonic(void);
double braid_walltime(void);
/* Raise braid.error's class `cls` made with msg (or with no argument if
** msg is NULL: its default text); where braid.error cannot be loaded, the
** plain message (or the class name). */
int braid_raise(lua_State *L, const char *cls, const char *msg);
/* For a __gc function: returns when the collector called it; raises when
** Lua code did (a metamethod reached as a field, or through getmetatable),
** as a finalizer run early would free what live objects still use. */
void braid_check_finalizer(lua_State *L);
/* Push nil, "message", "ENAME" for an errno (luv's convention), and the
** errno's number (Twisted's errors carry it as osError). */
int braid_pusherror(lua_State *L, int err);

/* timers.c */
/* Run the timers due now (FIFO among equal deadlines); returns how many. */
int braid_timers_run(lua_State *L);
/* Seconds until the next timer is due (0 if one is due), or -1 if none. */
double braid_timers_next(lua_State *L);

/* fdwatch.c */
/* After the loop's wait failed: stop the raw-descriptor watchers whose
** descriptor is closed and tell their callbacks so; returns how many. */
int braid_fdwatch_preen(void);

/* Module openers: each adds its functions to the table on top. */
void braid_open_loop(lua_State *L);
void braid_open_timers(lua_State *L);
void braid_open_signals(lua_State *L);
/* Replace os.execute in L's globals by one that runs the command with
** posix_spawn and waitpid, leaving this process's signal settings alone
** (system() ignores SIGINT and SIGQUIT in its caller; see signals.c). */
void braid_install_os_execute(lua_State *L);

int luaopen_braid_core(lua_State *L);

/* args.c: lauxlib's argument checks, raising braid.error objects
** (TypeError for a wrong type, ValueError for a wrong value) instead of
** strings. The macros below put them in place of lauxlib's in every file
** that includes this header (luaL_argcheck and luaL_argexpected call
** luaL_argerror and luaL_typeerror, so they follow). */
int braid_argerror(lua_State *L, int arg, const char *extramsg);
int braid_typeerror(lua_State *L, int arg, const char *tname);
void braid_checktype(lua_State *L, int arg, int t);
void braid_checkany(lua_State *L, int arg);
const char *braid_checklstring(lua_State *L, int arg, size_t *len);
const char *braid_optlstring(lua_State *L, int arg, const char *def, size_t *len);
lua_Number braid_checknumber(lua_State *L, int arg);
lua_Number braid_optnumber(lua_State *L, int arg, lua_Number def);
lua_Integer braid_checkinteger(lua_State *L, int arg);
lua_Integer braid_optinteger(lua_State *L, int arg, lua_Integer def);
void *braid_checkudata(lua_State *L, int arg, const char *tname);
int braid_checkoption(lua_State *L, int arg, const char *def, const char *const lst[]);

#ifndef BRAID_LAUXLIB_AS_IS
#define luaL_argerror braid_argerror
#define luaL_typeerror braid_typeerror
#define luaL_checktype braid_checktype
#define luaL_checkany braid_checkany
#define luaL_checklstring braid_checklstring
#define luaL_optlstring braid_optlstring
#define luaL_checknumber braid_checknumber
#define luaL_optnumber braid_optnumber
#define luaL_checkinteger braid_checkinteger
#define luaL_optinteger braid_optinteger
#define luaL_checkudata braid_checkudata
#define luaL_checkoption braid_checkoption
#endif

#endif
