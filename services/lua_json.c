/* lua_json.c - JSON values to Lua and back (lua_priv.h): objects become
 * tables, arrays tables marked with the array metatable, JSON null the
 * sluice.json.null sentinel; depth is bounded, which also catches cycles.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lua_priv.h"

/* Nesting limit of JSON <-> Lua conversions (also catches cycles). */
#define MAX_DEPTH 200

/* ------------------------------------------------------------------ */
/* JSON <-> Lua                                                       */
/* ------------------------------------------------------------------ */

static void push_json_depth(lua_State *L, json_t *v, int depth) {
    luaL_checkstack(L, 4, "JSON value nested too deeply");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(v));
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e) {
            if (depth >= MAX_DEPTH) {
                luaL_error(L, "JSON value nested deeper than %d levels",
                           MAX_DEPTH);
            }
            push_json_depth(L, e, depth + 1);
            lua_setfield(L, -2, k);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            if (depth >= MAX_DEPTH) {
                luaL_error(L, "JSON value nested deeper than %d levels",
                           MAX_DEPTH);
            }
            push_json_depth(L, json_array_get(v, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_array_mt);
        lua_setmetatable(L, -2);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_null); break;
    }
}

void sl_lua__push_json(lua_State *L, json_t *v) {
    if (!v)
        lua_pushnil(L);
    else
        push_json_depth(L, v, 0);
}

static int has_metatable(lua_State *L, int idx, const void *key) {
    if (!lua_getmetatable(L, idx)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* Decides whether a plain table is a JSON array: its keys are exactly the
 * integers 1..n with n > 0 (an empty table is an object unless marked). */
static int is_sequence(lua_State *L, int idx, lua_Integer *len) {
    lua_Integer count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1)) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k < 1) {
            lua_pop(L, 1);
            return 0;
        }
        if (k > max) max = k;
        count++;
    }
    *len = max;
    return count > 0 && count == max;
}

static json_t *to_json_depth(lua_State *L, int idx, int depth, char *err,
                             size_t errlen) {
    idx = lua_absindex(L, idx);
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "table nested deeper than %d levels (a cycle?)",
                 MAX_DEPTH);
        return NULL;
    }
    if (!lua_checkstack(L, 4)) {
        snprintf(err, errlen, "Lua stack exhausted");
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return json_null();
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) {
            snprintf(err, errlen, "number %g has no JSON form",
                     lua_tonumber(L, idx));
            return NULL;
        }
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        json_t *j = json_stringn(s, n);
        if (!j) snprintf(err, errlen, "string is not valid UTF-8");
        return j;
    }
    case LUA_TUSERDATA:
        if (lua_touserdata(L, idx) != NULL) {
            lua_rawgetp(L, LUA_REGISTRYINDEX, &sl_lua__key_null);
            int is_null = lua_rawequal(L, -1, idx);
            lua_pop(L, 1);
            if (is_null) return json_null();
        }
        break;
    case LUA_TTABLE: {
        lua_Integer len = 0;
        int array = has_metatable(L, idx, &sl_lua__key_array_mt);
        if (array)
            len = (lua_Integer)lua_rawlen(L, idx);
        else
            array = is_sequence(L, idx, &len);
        if (array) {
            json_t *a = json_array();
            if (!a) goto nomem;
            for (lua_Integer i = 1; i <= len; i++) {
                lua_rawgeti(L, idx, i);
                json_t *e = to_json_depth(L, -1, depth + 1, err, errlen);
                lua_pop(L, 1);
                if (!e || json_array_append_new(a, e) != 0) {
                    json_decref(a);
                    if (e) goto nomem;
                    return NULL;
                }
            }
            return a;
        }
        json_t *o = json_object();
        if (!o) goto nomem;
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            char kbuf[32];
            const char *k;
            if (lua_type(L, -2) == LUA_TSTRING) {
                k = lua_tostring(L, -2);
            } else if (lua_isinteger(L, -2)) {
                snprintf(kbuf, sizeof kbuf, "%lld",
                         (long long)lua_tointeger(L, -2));
                k = kbuf;
            } else {
                snprintf(err, errlen, "a table key of type %s has no JSON form",
                         luaL_typename(L, -2));
                lua_pop(L, 2);
                json_decref(o);
                return NULL;
            }
            json_t *e = to_json_depth(L, -1, depth + 1, err, errlen);
            if (!e) {
                lua_pop(L, 2);
                json_decref(o);
                return NULL;
            }
            if (json_object_set_new(o, k, e) != 0) {
                lua_pop(L, 2);
                json_decref(o);
                snprintf(err, errlen, "object key '%s' is not valid UTF-8", k);
                return NULL;
            }
            lua_pop(L, 1);
        }
        return o;
    }
    default: break;
    }
    snprintf(err, errlen, "a %s value has no JSON form", luaL_typename(L, idx));
    return NULL;
nomem:
    snprintf(err, errlen, "out of memory");
    return NULL;
}

json_t *sl_lua__to_json(lua_State *L, int idx, char *err, size_t errlen) {
    return to_json_depth(L, idx, 0, err, errlen);
}

