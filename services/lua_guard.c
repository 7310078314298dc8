/* lua_guard.c - what keeps a hostile hook stoppable and its jobs apart
 * (docs/lua.md, "The sandbox").
 *
 * Lua itself switches the count hook off in two places: inside a __gc
 * finalizer, and inside a message handler called for an error raised by
 * the hook. A C function also runs without the hook. So the sandbox:
 *
 * - refuses a metatable with a __gc field in setmetatable (a finalizer is
 *   only ever called if __gc was present when the metatable was set, and
 *   the engine's own metatables with __gc are never reachable from Lua);
 * - replaces pcall and xpcall: the sandbox's own errors (instruction or
 *   memory limit, a stop request) are never caught by user code, and an
 *   xpcall message handler runs after the stack unwound, as an ordinary
 *   call that the hook can interrupt;
 * - charges the loops of the table functions and of load to the
 *   instruction budget (lua_match.c does it for pattern matching);
 * - restores the global table, the library tables, the string metatable
 *   and every hook file's environment before each call (sl_lua__restore),
 *   so nothing one job does to them reaches the next.
 */
#include <stdint.h>
#include <string.h>

#include <lualib.h>

#include "lua_priv.h"

static const char key_snap = 0;   /* list of {t, copy, mt} */
static const char key_orig = 0;   /* name -> the library's own function */

/* ------------------------------------------------------------------ */
/* Protected calls                                                    */
/* ------------------------------------------------------------------ */

/* Whether the last error belongs to the sandbox (a spent budget or a stop
 * request) and must leave the hook whatever catches it. */
static int sandbox_error(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    return h->insn_exceeded || h->mem_exceeded || h->stopped;
}

/* pcall(f, ...) -> true, ... | false, err */
static int sb_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (st != LUA_OK && sandbox_error(L)) return lua_error(L);
    lua_pushboolean(L, st == LUA_OK);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* xpcall(f, msgh, ...) -> true, ... | false, msgh(err)
 *
 * Unlike Lua's own, msgh is called once the failed call has unwound: Lua
 * calls a message handler with the hook switched off when the error came
 * from the hook, so a handler that loops could never be stopped. */
static int sb_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_remove(L, 2);
    lua_insert(L, 1); /* msgh, f, args... */
    int st = lua_pcall(L, n - 2, LUA_MULTRET, 0);
    if (st != LUA_OK && sandbox_error(L)) return lua_error(L);
    if (st == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_replace(L, 1);
        return lua_gettop(L);
    }
    lua_pushvalue(L, 1);
    lua_insert(L, -2); /* msgh, err */
    st = lua_pcall(L, 1, 1, 0);
    if (st != LUA_OK && sandbox_error(L)) return lua_error(L);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

/* ------------------------------------------------------------------ */
/* Metatables                                                         */
/* ------------------------------------------------------------------ */

static int call_orig(lua_State *L, const char *name) {
    int n = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_orig);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* setmetatable(t, mt) without finalizers. */
static int sb_setmetatable(lua_State *L) {
    if (lua_istable(L, 2)) {
        lua_pushliteral(L, "__gc");
        int gc = lua_rawget(L, 2) != LUA_TNIL;
        lua_pop(L, 1);
        if (gc)
            return luaL_error(L, "sandbox: __gc metamethods are not allowed "
                                 "in sluice hooks (a finalizer runs outside "
                                 "the instruction limit)");
    }
    return call_orig(L, "setmetatable");
}

/* ------------------------------------------------------------------ */
/* Loops in C                                                         */
/* ------------------------------------------------------------------ */

/* The length the table functions will use for argument 1, refused when a
 * __len metamethod could give them another one than it gives us. */
static lua_Integer table_len(lua_State *L, const char *who) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (luaL_getmetafield(L, 1, "__len") != LUA_TNIL)
        luaL_error(L, "sandbox: table.%s does not accept a table with a "
                      "__len metamethod", who);
    return (lua_Integer)lua_rawlen(L, 1);
}

static void charge_count(lua_State *L, lua_Integer n) {
    if (n > 0) sl_lua__charge(L, n > INT64_MAX / 64 ? INT64_MAX / 64 : n);
}

/* table.insert / table.remove shift every element after the position:
 * charge the length. */
static int sb_tinsert(lua_State *L) {
    charge_count(L, table_len(L, "insert"));
    return call_orig(L, "insert");
}

static int sb_tremove(lua_State *L) {
    charge_count(L, table_len(L, "remove"));
    return call_orig(L, "remove");
}

/* table.sort: charge n log2 n comparisons. */
static int sb_tsort(lua_State *L) {
    lua_Integer n = table_len(L, "sort"), lg = 1;
    while (lg < 63 && ((lua_Integer)1 << lg) < n) lg++;
    charge_count(L, n > INT64_MAX / 128 ? INT64_MAX / 128 : n * lg);
    return call_orig(L, "sort");
}

/* table.move(a1, f, e, t [, a2]): e - f + 1 elements. */
static int sb_tmove(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f) charge_count(L, (e - f) >= INT64_MAX / 2 ? INT64_MAX / 2
                                                        : e - f + 1);
    return call_orig(L, "move");
}

/* table.concat(t, sep, i, j): j - i + 1 elements, each may be a call. */
static int sb_tconcat(lua_State *L) {
    lua_Integer i = luaL_optinteger(L, 3, 1);
    lua_Integer j = lua_isnoneornil(L, 4) ? table_len(L, "concat")
                                          : luaL_checkinteger(L, 4);
    if (j >= i) charge_count(L, (j - i) >= INT64_MAX / 2 ? INT64_MAX / 2
                                                        : j - i + 1);
    return call_orig(L, "concat");
}

/* Wraps the library function t[name] (t at idx): the original goes to the
 * registry, the wrapper into t. */
static void wrap(lua_State *L, int idx, const char *name, lua_CFunction fn) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_orig);
    lua_getfield(L, idx, name);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
    lua_pushcfunction(L, fn);
    lua_setfield(L, idx, name);
}

void sl_lua__guard_install(lua_State *L) {
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_orig);
    lua_pushglobaltable(L);
    wrap(L, -1, "setmetatable", sb_setmetatable);
    lua_pushcfunction(L, sb_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, -2, "xpcall");
    lua_getfield(L, -1, LUA_TABLIBNAME);
    wrap(L, -1, "insert", sb_tinsert);
    wrap(L, -1, "remove", sb_tremove);
    wrap(L, -1, "sort", sb_tsort);
    wrap(L, -1, "move", sb_tmove);
    wrap(L, -1, "concat", sb_tconcat);
    lua_pop(L, 1);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    sl_lua__open_match(L, -1);
    lua_pop(L, 2);
}

/* ------------------------------------------------------------------ */
/* Pristine tables for every call                                     */
/* ------------------------------------------------------------------ */

/* Appends {t, copy of t, metatable of t or false} for the table at idx. */
static void snap_one(lua_State *L, int list, int idx) {
    idx = lua_absindex(L, idx);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "t");
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_setfield(L, -2, "copy");
    if (!lua_getmetatable(L, idx)) lua_pushboolean(L, 0);
    lua_setfield(L, -2, "mt");
    lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

/* Snapshots the table at idx and, `depth` levels down, the tables it
 * holds; `seen` (an index) avoids doing one twice. */
static void snap_tree(lua_State *L, int list, int seen, int idx, int depth) {
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, seen) != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    snap_one(L, list, idx);
    if (depth == 0) return;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_istable(L, -1)) snap_tree(L, list, seen, -1, depth - 1);
        lua_pop(L, 1);
    }
}

void sl_lua__snapshot_libs(lua_State *L) {
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_newtable(L);
    int seen = lua_gettop(L);
    lua_pushglobaltable(L);
    snap_tree(L, list, seen, -1, 2);
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) snap_tree(L, list, seen, -1, 0);
    lua_settop(L, list);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_snap);
}

void sl_lua__snapshot_add(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_snap);
    snap_one(L, lua_gettop(L), idx);
    lua_pop(L, 1);
}

/* Puts the table of entry e (at the top) back as it was. */
static void restore_one(lua_State *L) {
    int e = lua_gettop(L);
    lua_getfield(L, e, "t");
    lua_getfield(L, e, "copy");
    int t = e + 1, copy = e + 2;
    /* Drop what was added (setting an existing field to nil is allowed
     * while traversing), then put every original field back. */
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, copy) == LUA_TNIL) {
            lua_pushvalue(L, -2);
            lua_pushnil(L);
            lua_rawset(L, t);
        }
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, copy) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, t);
    }
    lua_getfield(L, e, "mt");
    if (lua_toboolean(L, -1))
        lua_setmetatable(L, t);
    else {
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_setmetatable(L, t);
    }
    lua_settop(L, e);
}

void sl_lua__restore(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_snap);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        restore_one(L);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}
