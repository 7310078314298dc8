/* lua_host.c - the sandboxed Lua 5.4 host (lua_host.h, docs/lua.md).
 *
 * The sandbox follows what Redis' scripting.c does: only whitelisted
 * libraries are opened, the global table is locked once the hook files
 * have run, every call goes through lua_pcall with a traceback handler,
 * a count hook bounds the instructions of a call and the allocator bounds
 * the heap. Each hook file runs in its own environment table (so two files
 * may both define `run`), whose misses fall through to the shared, locked
 * global table.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "text.h"
#include "lua_priv.h"

/* The count hook runs every HOOK_EVERY VM instructions. */
#define HOOK_EVERY 1000
#define DEFAULT_INSTRUCTIONS 10000000LL
#define DEFAULT_MEMORY ((size_t)64 << 20)

const char sl_lua__key_null = 0;
const char sl_lua__key_array_mt = 0;
const char sl_lua__key_error_mt = 0;
const char sl_lua__key_box_mt = 0;
static const char key_hooks = 0;  /* point -> function */
static const char key_files = 0;  /* absolute path -> module (hook files) */
static const char key_loaded = 0; /* absolute path -> module (require) */

sl_lua *sl_lua__host(lua_State *L) {
    return *(sl_lua **)lua_getextraspace(L);
}

/* ------------------------------------------------------------------ */
/* Memory and instruction limits                                      */
/* ------------------------------------------------------------------ */

/* The allocator: counts the heap and refuses to grow it past mem_limit.
 * Lua turns a refusal into a "not enough memory" error (after an
 * emergency collection), which the state survives. */
static void count_hook(lua_State *L, lua_Debug *ar);

static void *sl_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sl_lua *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        h->mem_used -= old;
        return NULL;
    }
    if (nsize > old && h->mem_limit &&
        h->mem_used + (nsize - old) > h->mem_limit) {
        h->mem_exceeded = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p) return NULL;
    h->mem_used = h->mem_used - old + nsize;
    return p;
}

/* Enforces the instruction budget and notices when the runtime wants the
 * job to stop. Once the budget is exceeded the count hook runs at every
 * instruction and raises each time, so a hook that catches the error is
 * interrupted again by the first instruction after the catch, level after
 * level, until the error leaves the hook (and the call fails regardless);
 * the sandbox's pcall and xpcall do not even catch it (lua_guard.c). */
static void check_budget(lua_State *L, sl_lua *h) {
    if (h->insn_limit > 0 && h->insn_used > h->insn_limit) {
        if (!h->insn_exceeded) lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
        h->insn_exceeded = 1;
        luaL_error(L, "instruction limit exceeded (%I instructions)",
                   (lua_Integer)h->insn_limit);
    }
    if (h->ctx && (++h->ticks % 64) == 0 && sl_ctx_should_stop(h->ctx)) {
        h->stopped = 1;
        sl_lua__raise(L, SL_EC_RETRYABLE, 0,
                      "stopped: the job was cancelled or the worker is "
                      "shutting down");
    }
}

static void count_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    sl_lua *h = sl_lua__host(L);
    h->insn_used += HOOK_EVERY;
    check_budget(L, h);
}

void sl_lua__charge(lua_State *L, int64_t n) {
    sl_lua *h = sl_lua__host(L);
    h->insn_used += n;
    check_budget(L, h);
}

static int panic(lua_State *L) {
    const char *m = lua_tostring(L, -1);
    sl_log(SL_LOG_ERROR, "unprotected Lua error", "error", m ? m : "?", NULL);
    abort();
}

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

int sl_lua__raise(lua_State *L, sl_errclass cls, int64_t delay_ms,
                  const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    sl_text_vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, sl_errclass_name(cls));
    lua_setfield(L, -2, "class");
    luaL_where(L, 1);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, (lua_Integer)delay_ms);
    lua_setfield(L, -2, "delay_ms");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_error_mt);
    lua_setmetatable(L, -2);
    return lua_error(L);
}

static int is_sluice_error(lua_State *L, int idx) {
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_error_mt);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

static int error_tostring(lua_State *L) {
    lua_getfield(L, 1, "message");
    return 1;
}

int sl_lua__msgh(lua_State *L) {
    if (is_sluice_error(L, 1)) {
        lua_getfield(L, 1, "message");
        luaL_traceback(L, L, lua_tostring(L, -1), 1);
        lua_setfield(L, 1, "traceback");
        lua_settop(L, 1);
        return 1;
    }
    const char *msg = NULL;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER)
        msg = lua_tostring(L, 1);
    else /* never __tostring: this may run with the count hook off */
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Boxes                                                              */
/* ------------------------------------------------------------------ */

void sl_lua__box_free(sl_lua__box *b) {
    if (b->res) PQclear(b->res);
    json_decref(b->json);
    free(b->str);
    b->res = NULL;
    b->json = NULL;
    b->str = NULL;
}

static int box_gc(lua_State *L) {
    sl_lua__box_free(lua_touserdata(L, 1));
    return 0;
}

sl_lua__box *sl_lua__box_new(lua_State *L) {
    sl_lua__box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_box_mt);
    lua_setmetatable(L, -2);
    return b;
}

/* ------------------------------------------------------------------ */
/* The sandbox                                                        */
/* ------------------------------------------------------------------ */

static const char *const unavailable[] = {
    "io", "debug",   "package",    "dofile",  "loadfile", "coroutine",
    "_G", "require", "loadstring", "setfenv", "getfenv",  NULL};

/* __index of the locked global table: a miss is an error. */
static int locked_index(lua_State *L) {
    const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2)
                                                     : luaL_typename(L, 2);
    for (int i = 0; unavailable[i]; i++)
        if (strcmp(name, unavailable[i]) == 0)
            return luaL_error(L,
                              "sandbox: '%s' is not available in sluice "
                              "hooks (docs/lua.md lists what is)",
                              name);
    return luaL_error(L, "sandbox: read of undeclared global '%s'", name);
}

/* __newindex of a locked environment. */
static int locked_newindex(lua_State *L) {
    const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2)
                                                     : luaL_typename(L, 2);
    return luaL_error(L,
                      "sandbox: assignment to undeclared global '%s' (globals "
                      "are locked after loading; declare it local)",
                      name);
}

/* __index of the restricted `os` table. */
static int os_index(lua_State *L) {
    const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2)
                                                     : luaL_typename(L, 2);
    return luaL_error(L,
                      "sandbox: os.%s is not available in sluice hooks (only "
                      "os.time, os.clock and os.date are)",
                      name);
}

/* Sets a protected metatable on the table at idx: reads of missing keys go
 * to `fallback` (an index, 0 = none: error), writes of new keys fail. */
static void lock_table(lua_State *L, int idx, int fallback,
                       lua_CFunction miss) {
    idx = lua_absindex(L, idx);
    if (fallback) fallback = lua_absindex(L, fallback);
    lua_createtable(L, 0, 3);
    if (fallback)
        lua_pushvalue(L, fallback);
    else
        lua_pushcfunction(L, miss);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, locked_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, idx);
}

/* load(chunk [, chunkname [, mode [, env]]]) for text chunks only. */
static int sb_load(lua_State *L) {
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    if (!s) {
        luaL_pushfail(L);
        lua_pushliteral(L, "sandbox: load accepts only a string chunk");
        return 2;
    }
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strchr(mode, 'b') || (len > 0 && s[0] == LUA_SIGNATURE[0])) {
        luaL_pushfail(L);
        lua_pushliteral(L, "sandbox: load of a binary chunk is not allowed "
                           "(only text chunks)");
        return 2;
    }
    /* The parser runs in C: a chunk costs one instruction a byte. */
    sl_lua__charge(L, (int64_t)len);
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnone(L, 4)) {
        lua_pushvalue(L, 4);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 1;
}

/* print(...) -> a log line at level info. */
static int sb_print(lua_State *L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    sl_lua *h = sl_lua__host(L);
    sl_log(SL_LOG_INFO, lua_tostring(L, -1), "stage",
           h->stage && h->stage->name ? h->stage->name : "", "job",
           h->job && h->job->id ? h->job->id : NULL, NULL);
    return 0;
}

/* collectgarbage without the options that would disable the collector. */
static int sb_collectgarbage(lua_State *L) {
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") == 0) {
        lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT) +
                              (lua_Number)lua_gc(L, LUA_GCCOUNTB) / 1024.0);
        return 1;
    }
    if (strcmp(opt, "collect") == 0) {
        lua_gc(L, LUA_GCCOLLECT);
        lua_pushinteger(L, 0);
        return 1;
    }
    if (strcmp(opt, "step") == 0) {
        lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, 0));
        return 1;
    }
    return luaL_error(L,
                      "sandbox: collectgarbage('%s') is not available (only "
                      "count, collect, step)",
                      opt);
}

static int null_tostring(lua_State *L) {
    lua_pushliteral(L, "null");
    return 1;
}

/* Builds the global table: the whitelisted libraries, the sandboxed base
 * functions, the `sluice` API; then locks it. Runs in protected mode. */
static int open_sandbox(lua_State *L) {
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(L, 0);

    /* os: time, clock and date only. */
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_createtable(L, 0, 3);
    static const char *const os_ok[] = {"time", "clock", "date", NULL};
    for (int i = 0; os_ok[i]; i++) {
        lua_getfield(L, 1, os_ok[i]);
        lua_setfield(L, 2, os_ok[i]);
    }
    lock_table(L, 2, 0, os_index);
    lua_setglobal(L, "os");
    lua_settop(L, 0);
    /* requiref registered the full os library in the registry's _LOADED
     * table; nothing reaches it from the sandbox, but drop it anyway. */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    lua_setfield(L, -2, LUA_OSLIBNAME);
    lua_settop(L, 0);

    static const char *const removed[] = {"dofile", "loadfile", "_G", NULL};
    for (int i = 0; removed[i]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, removed[i]);
    }
    lua_pushcfunction(L, sb_load);
    lua_setglobal(L, "load");
    lua_pushcfunction(L, sb_print);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, sb_collectgarbage);
    lua_setglobal(L, "collectgarbage");

    /* Registry entries. */
    lua_newuserdatauv(L, 0, 0); /* the null sentinel */
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "sluice.json.null");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "sluice.json.null");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sl_lua__key_null);

    /* Protected: a __gc added to it would make every later array a
     * finalizer that runs with the count hook off. */
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "sluice.json.array");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "sluice.json.array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sl_lua__key_array_mt);

    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "sluice.error");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "sluice.error");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sl_lua__key_error_mt);

    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sl_lua__key_box_mt);

    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_hooks);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_files);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &key_loaded);

    sl_lua__open_api(L);
    sl_lua__guard_install(L);

    lua_pushglobaltable(L);
    lock_table(L, -1, 0, locked_index);
    lua_pop(L, 1);
    sl_lua__snapshot_libs(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_array_mt);
    sl_lua__snapshot_add(L, -1);
    lua_pop(L, 1);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Hook files and require                                             */
/* ------------------------------------------------------------------ */

static void push_require(lua_State *L, const char *root);

/* Runs the file `path` (already resolved, absolute) in a fresh
 * environment whose require() resolves inside `root`; pushes its module:
 * what the file returned, or its environment when it returned nothing.
 * The environment is locked afterwards. Raises on any error. */
static void run_file(lua_State *L, const char *path, const char *root) {
    if (luaL_loadfilex(L, path, "t") != LUA_OK) lua_error(L);
    lua_newtable(L); /* the environment E */
    push_require(L, root);
    lua_setfield(L, -2, "require");
    lua_createtable(L, 0, 1);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setupvalue(L, -3, 1); /* the chunk's _ENV = E */
    lua_insert(L, -2);        /* E, chunk */
    lua_call(L, 0, 1);        /* E, result */
    lua_pushglobaltable(L);
    lock_table(L, -3, -1, NULL);
    lua_pop(L, 1);
    sl_lua__snapshot_add(L, -2); /* E as the file left it */
    if (lua_isnil(L, -1))
        lua_pop(L, 1);
    else
        lua_remove(L, -2);
}

static int run_file_p(lua_State *L) {
    run_file(L, lua_tostring(L, 1), lua_tostring(L, 2));
    return 1;
}

static int valid_module_name(const char *s) {
    int seg = 0; /* length of the current segment */
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s == '.') {
            if (seg == 0) return 0;
            seg = 0;
        } else if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                   *s == '_' || (seg > 0 && *s >= '0' && *s <= '9')) {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0;
}

/* require(name): loads "<root>/<name with . as />.lua" once. The name is
 * restricted to identifiers separated by dots, and the resolved real path
 * must stay inside the root (no `..`, no absolute paths, no symlinks out). */
static int sb_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *root = lua_tostring(L, lua_upvalueindex(1));
    if (!valid_module_name(name) || strlen(name) > 200)
        return luaL_error(L,
                          "sandbox: require('%s') refused: a module name is "
                          "identifiers separated by dots, naming a .lua file "
                          "inside the hook directory",
                          name);
    char rel[256], path[PATH_MAX + 256], real[PATH_MAX];
    snprintf(rel, sizeof rel, "%s", name);
    for (char *p = rel; *p; p++)
        if (*p == '.') *p = '/';
    snprintf(path, sizeof path, "%s/%s.lua", root, rel);
    size_t rl = strlen(root);
    if (!realpath(path, real) || strncmp(real, root, rl) != 0 ||
        real[rl] != '/')
        return luaL_error(L,
                          "sandbox: require('%s') refused: no module %s.lua "
                          "inside the hook directory %s (only modules there "
                          "can be required)",
                          name, rel, root);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_loaded);
    int loaded = lua_gettop(L);
    if (lua_getfield(L, loaded, real) != LUA_TNIL) {
        if (lua_touserdata(L, -1) == &key_loaded)
            return luaL_error(L, "require('%s'): circular require", name);
        return 1;
    }
    lua_pop(L, 1);
    /* Mark the module as loading to catch cycles. */
    lua_pushlightuserdata(L, (void *)&key_loaded);
    lua_setfield(L, loaded, real);
    lua_pushcfunction(L, run_file_p);
    lua_pushstring(L, real);
    lua_pushstring(L, root);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        lua_pushnil(L);
        lua_setfield(L, loaded, real); /* a later require may try again */
        return lua_error(L);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, loaded, real);
    return 1;
}

static void push_require(lua_State *L, const char *root) {
    lua_pushstring(L, root);
    lua_pushcclosure(L, sb_require, 1);
}

/* Protected part of sl_lua_open: loads every hook's file once and binds
 * each point to its function. */
static int load_hooks(lua_State *L) {
    sl_lua *h = sl_lua__host(L);
    const sl_stage *st = h->stage;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_hooks);
    int hooks = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_files);
    int files = lua_gettop(L);
    for (size_t i = 0; i < st->nhooks; i++) {
        const sl_hook *k = &st->hooks[i];
        char real[PATH_MAX], root[PATH_MAX];
        if (!realpath(k->file, real))
            return luaL_error(L, "%s: cannot open hook file: %s", k->file,
                              strerror(errno));
        snprintf(root, sizeof root, "%s", real);
        char *slash = strrchr(root, '/');
        if (slash && slash != root)
            *slash = '\0';
        else
            snprintf(root, sizeof root, "/");
        if (lua_getfield(L, files, real) == LUA_TNIL) {
            lua_pop(L, 1);
            run_file(L, real, root);
            lua_pushvalue(L, -1);
            lua_setfield(L, files, real);
        }
        const char *fn = k->function ? k->function : k->point;
        if (!lua_istable(L, -1))
            return luaL_error(L,
                              "%s: hook '%s': the file returned a %s, not a "
                              "table of functions",
                              k->file, k->point, luaL_typename(L, -1));
        lua_pushstring(L, fn);
        lua_rawget(L, -2);
        if (!lua_isfunction(L, -1))
            return luaL_error(L,
                              "%s: hook '%s': no function '%s' is defined in "
                              "the file",
                              k->file, k->point, fn);
        lua_setfield(L, hooks, k->point);
        lua_pop(L, 1);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Open, call, close                                                  */
/* ------------------------------------------------------------------ */

static const sl_hook *find_hook(const sl_stage *st, const char *point) {
    for (size_t i = 0; st && i < st->nhooks; i++)
        if (strcmp(st->hooks[i].point, point) == 0) return &st->hooks[i];
    return NULL;
}

static size_t hook_memory(const sl_hook *k) {
    return k && k->memory_limit > 0 ? k->memory_limit : DEFAULT_MEMORY;
}

static int64_t hook_instructions(const sl_hook *k) {
    return k && k->instruction_limit > 0 ? k->instruction_limit
                                         : DEFAULT_INSTRUCTIONS;
}

/* Limits while loading and between calls: the largest of the hooks'. */
static void set_idle_limits(sl_lua *h) {
    size_t mem = h->stage->nhooks ? 0 : DEFAULT_MEMORY;
    int64_t insn = h->stage->nhooks ? 0 : DEFAULT_INSTRUCTIONS;
    for (size_t i = 0; i < h->stage->nhooks; i++) {
        if (hook_memory(&h->stage->hooks[i]) > mem)
            mem = hook_memory(&h->stage->hooks[i]);
        if (hook_instructions(&h->stage->hooks[i]) > insn)
            insn = hook_instructions(&h->stage->hooks[i]);
    }
    h->mem_limit = mem;
    h->insn_limit = insn;
    h->insn_used = 0;
    h->insn_exceeded = 0;
    h->mem_exceeded = 0;
    lua_sethook(h->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* Copies the message of a failed pcall (at the top of the stack) to buf. */
/* The error at the top of the stack as safe text (text.h) in buf. */
static void error_text(lua_State *L, char *buf, size_t len) {
    const char *m = NULL;
    size_t ml = 0;
    if (is_sluice_error(L, -1)) {
        lua_getfield(L, -1, "message");
        m = lua_tolstring(L, -1, &ml);
        sl_text_copy(buf, len, m ? m : "?", m ? ml : 1);
        lua_pop(L, 1);
        return;
    }
    m = lua_tolstring(L, -1, &ml);
    if (!m) {
        m = "(error object is not a string)";
        ml = strlen(m);
    }
    sl_text_copy(buf, len, m, ml);
}

int sl_lua_open(const sl_stage *stage, sl_lua **out, char *err, size_t errlen) {
    int rc = 0;
    *out = NULL;
    sl_lua *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -SL_ENOMEM;
    }
    h->stage = stage;
    h->L = lua_newstate(sl_alloc, h);
    if (!h->L) {
        snprintf(err, errlen, "cannot create a Lua state: out of memory");
        rc = -SL_ENOMEM;
        goto fail_state;
    }
    lua_State *L = h->L;
    *(sl_lua **)lua_getextraspace(L) = h;
    lua_atpanic(L, panic);
    set_idle_limits(h);
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);

    lua_pushcfunction(L, sl_lua__msgh);
    lua_pushcfunction(L, open_sandbox);
    if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
        char m[512];
        error_text(L, m, sizeof m);
        snprintf(err, errlen, "cannot set up the Lua sandbox: %s", m);
        rc = -SL_ELUA;
        goto fail_lua;
    }
    lua_pushcfunction(L, load_hooks);
    if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
        char m[1024];
        error_text(L, m, sizeof m);
        /* The message names file:line; a traceback of the loader adds
         * nothing for `sluice validate`. */
        char *tb = strstr(m, "\nstack traceback:");
        if (tb) *tb = '\0';
        if (h->mem_exceeded)
            snprintf(err, errlen,
                     "memory limit of %zu bytes exceeded while loading hooks: "
                     "%s",
                     h->mem_limit, m);
        else
            snprintf(err, errlen, "%s", m);
        rc = -SL_ELUA;
        goto fail_lua;
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    set_idle_limits(h);
    *out = h;
    return 0;

fail_lua:
    lua_close(h->L);
fail_state:
    free(h);
    return rc;
}

int sl_lua_check(const sl_stage *stage, char *err, size_t errlen) {
    sl_lua *h = NULL;
    int rc = sl_lua_open(stage, &h, err, errlen);
    sl_lua_close(h);
    return rc;
}

int sl_lua_has(const sl_lua *h, const char *point) {
    if (!h || !point) return 0;
    lua_State *L = h->L;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_hooks);
    int yes = lua_getfield(L, -1, point) == LUA_TFUNCTION;
    lua_pop(L, 2);
    return yes;
}

void sl_lua_set_conn(sl_lua *h, PGconn *conn) {
    if (h) h->conn = conn;
}

struct call {
    const char *point;
    json_t *args;
    json_t *ret;
};

/* Protected part of sl_lua_call: converts the arguments, calls the hook,
 * converts its first result. */
static int call_p(lua_State *L) {
    struct call *c = lua_touserdata(L, 1);
    sl_lua__restore(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &key_hooks);
    lua_getfield(L, -1, c->point);
    size_t n = json_array_size(c->args);
    luaL_checkstack(L, (int)n + 8, "too many hook arguments");
    for (size_t i = 0; i < n; i++)
        sl_lua__push_json(L, json_array_get(c->args, i));
    lua_call(L, (int)n, 1);
    if (!lua_isnil(L, -1)) {
        char err[256];
        c->ret = sl_lua__to_json(L, -1, err, sizeof err);
        if (!c->ret)
            return luaL_error(L,
                              "the %s hook returned a value that cannot be "
                              "converted to JSON: %s",
                              c->point, err);
    }
    return 0;
}

int sl_lua_call(sl_lua *h, const char *point, sl_ctx *ctx, const sl_job *job,
                json_t *args, json_t **ret, sl_result *res) {
    *ret = NULL;
    const sl_hook *k = find_hook(h->stage, point);
    if (!k || !sl_lua_has(h, point)) {
        sl_fail(res, SL_EC_INTERNAL, "stage %s has no Lua hook '%s'",
                h->stage && h->stage->name ? h->stage->name : "?", point);
        return -SL_ENOTFOUND;
    }
    if (args && !json_is_array(args)) {
        sl_fail(res, SL_EC_INTERNAL,
                "Lua hook '%s': arguments must be a "
                "JSON array",
                point);
        return -SL_EINVAL;
    }
    lua_State *L = h->L;
    int base = lua_gettop(L);
    struct call c = {point, args, NULL};

    h->ctx = ctx;
    h->job = job;
    h->point = point;
    h->checkpoint =
        job && job->checkpoint ? json_incref(job->checkpoint) : NULL;
    h->stopped = 0;
    h->mem_limit = hook_memory(k);
    h->mem_exceeded = 0;
    h->insn_limit = hook_instructions(k);
    h->insn_used = 0;
    h->insn_exceeded = 0;

    lua_pushcfunction(L, sl_lua__msgh);
    lua_pushcfunction(L, call_p);
    lua_pushlightuserdata(L, &c);
    int st = lua_pcall(L, 1, 0, base + 1);

    int rc = 0;
    char msg[900];
    msg[0] = '\0';
    if (st != LUA_OK) error_text(L, msg, sizeof msg);
    if (st == LUA_OK && !h->mem_exceeded && !h->insn_exceeded) {
        *ret = c.ret;
    } else {
        json_decref(c.ret);
        rc = -SL_ELUA;
        if (h->mem_exceeded) {
            sl_fail(res, SL_EC_SCRIPT,
                    "Lua hook '%s': memory limit exceeded (%zu bytes)%s%s",
                    point, h->mem_limit, st != LUA_OK ? ": " : "", msg);
        } else if (h->insn_exceeded && st != LUA_OK &&
                   strstr(msg, "instruction limit exceeded")) {
            sl_fail(res, SL_EC_SCRIPT, "Lua hook '%s': %s", point, msg);
        } else if (h->insn_exceeded) {
            /* The hook caught the error (or another error followed). */
            sl_fail(res, SL_EC_SCRIPT,
                    "Lua hook '%s': instruction limit exceeded (%lld "
                    "instructions)%s%s",
                    point, (long long)h->insn_limit, st != LUA_OK ? ": " : "",
                    msg);
        } else if (is_sluice_error(L, -1)) {
            lua_getfield(L, -1, "class");
            int cls = sl_errclass_parse(lua_tostring(L, -1));
            lua_getfield(L, -2, "delay_ms");
            int64_t delay = (int64_t)lua_tointeger(L, -1);
            lua_getfield(L, -3, "traceback");
            const char *tb = lua_tostring(L, -1);
            if (cls < 0) cls = SL_EC_SCRIPT;
            /* last_error keeps what the hook said (sluice.fail("msg"));
             * where it came from goes to the log. */
            sl_fail(res, (sl_errclass)cls, "Lua hook '%s': %s", point, msg);
            if (tb && cls != SL_EC_RETRYABLE)
                sl_log(SL_LOG_DEBUG, "lua hook raised", "hook", point,
                       "traceback", tb, NULL);
            res->delay_ms = delay > 0 ? delay : 0;
        } else {
            sl_fail(res, SL_EC_SCRIPT, "Lua hook '%s': %s", point, msg);
        }
        sl_redact(res->message, sizeof res->message);
        sl_metrics_lua_error(h->stage);
    }
    lua_settop(L, base);

    /* Back to the idle state: no job, no statement in flight, a
     * collected heap. */
    sl_lua__sql_end_call(h);
    h->ctx = NULL;
    h->job = NULL;
    h->point = NULL;
    json_decref(h->checkpoint);
    h->checkpoint = NULL;
    if (rc != 0) {
        h->mem_limit = 0;
        lua_gc(L, LUA_GCCOLLECT);
    }
    set_idle_limits(h);
    return rc;
}

void sl_lua_close(sl_lua *h) {
    if (!h) return;
    lua_close(h->L);
    sl_lua__close_api(h);
    json_decref(h->checkpoint);
    free(h);
}

json_t *sl_lua_job_json(const sl_job *job) {
    json_t *o = json_object();
    if (!o || !job) return o;
    if (job->id) json_object_set_new(o, "id", json_string(job->id));
    if (job->subject_id)
        json_object_set_new(o, "subject_id", json_string(job->subject_id));
    json_object_set_new(o, "attempt", json_integer(job->attempt));
    /* SQL NULL columns are left out (nil in Lua), as in sluice.sql rows:
     * a null sentinel would be truthy and trip `if job.input.x then`. */
    json_t *in = json_object();
    const char *k;
    json_t *v;
    if (json_is_object(job->input))
        json_object_foreach(job->input, k, v) if (!json_is_null(v))
            json_object_set(in, k, v);
    json_object_set_new(o, "input", in);
    if (job->checkpoint) json_object_set(o, "checkpoint", job->checkpoint);
    if (job->stage) {
        json_object_set_new(o, "config",
                            job->stage->with ? json_incref(job->stage->with)
                                             : json_object());
        if (job->stage->name)
            json_object_set_new(o, "stage", json_string(job->stage->name));
        if (job->stage->pipeline && job->stage->pipeline->name)
            json_object_set_new(o, "pipeline",
                                json_string(job->stage->pipeline->name));
    }
    return o;
}
