/* dsl_provider.c - what a stage runs: its handler, `with` and Lua hooks,
 * read from the stage itself or from the provider its `providers:` choose.
 *
 * Every provider is read and checked (handler registered, hooks compile,
 * next targets exist), chosen or not, so a file that loads in one
 * environment loads in all; only an unset ${VAR} in a provider that was
 * not chosen is no error.
 */
#include "dsl_priv.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>

#include "handler.h"

/* ---- Lua hooks ------------------------------------------------------------
 */

/* Compiles a hook file (text chunks only: precompiled bytecode is
 * refused) in a fresh Lua state. Returns NULL when it compiles, else a
 * message (static or in the tree arena). Results are cached per path. */
static const char *compile_lua(loader *L, const char *abs, const char *shown) {
    for (size_t i = 0; i < L->nlua; i++)
        if (strcmp(L->lua[i].path, abs) == 0) return L->lua[i].error;
    char *err = NULL;
    struct stat st;
    FILE *f = NULL;
    char *buf = NULL;
    lua_State *ls = NULL;
    char msg[600];
    if (stat(abs, &st) != 0) {
        snprintf(msg, sizeof msg, "Lua file '%s' not found (%s)",
                 sl_dsl__show(shown), strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, sizeof msg, "Lua file '%s' is not a regular file",
                 sl_dsl__show(shown));
        goto fail;
    }
    if (st.st_size > (off_t)MAX_FILE_BYTES) {
        snprintf(msg, sizeof msg,
                 "Lua file '%s' is too large (%lld bytes, "
                 "at most %u)",
                 sl_dsl__show(shown), (long long)st.st_size, MAX_FILE_BYTES);
        goto fail;
    }
    f = fopen(abs, "rb");
    buf = malloc((size_t)st.st_size + 1);
    if (!f || !buf) {
        snprintf(msg, sizeof msg, "Lua file '%s' cannot be read (%s)",
                 sl_dsl__show(shown), strerror(errno));
        goto fail;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    ls = luaL_newstate();
    if (!ls) {
        snprintf(msg, sizeof msg, "out of memory compiling '%s'",
                 sl_dsl__show(shown));
        goto fail;
    }
    char chunkname[300];
    snprintf(chunkname, sizeof chunkname, "=%s", shown);
    if (luaL_loadbufferx(ls, buf, n, chunkname, "t") != LUA_OK) {
        const char *e = lua_tostring(ls, -1);
        snprintf(msg, sizeof msg, "Lua syntax error: %s", e ? e : "?");
        goto fail;
    }
    goto done;
fail:
    err = sl_dsl__arena_strdup(L->a, msg);
done:
    if (ls) lua_close(ls);
    if (f) fclose(f);
    free(buf);
    if (L->nlua == L->caplua) {
        size_t cap = L->caplua ? L->caplua * 2 : 8;
        lua_seen *v = realloc(L->lua, cap * sizeof *v);
        if (!v) return err;
        L->lua = v;
        L->caplua = cap;
    }
    L->lua[L->nlua].path = strdup(abs);
    L->lua[L->nlua].error = err;
    if (L->lua[L->nlua].path) L->nlua++;
    return err;
}

static int is_lua_name(const char *s) {
    if (!(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    return strlen(s) <= 63;
}

static void read_hook(loader *L, const node *k, const node *v, sl_hook *h) {
    h->line = k->line;
    h->col = k->col;
    h->point = sl_dsl__read_ident(L, k, "hook point", ID_NAME);
    h->function = h->point;
    h->instruction_limit = 10000000;
    h->memory_limit = 64u * 1024 * 1024;
    const node *fn = v;
    if (v->kind == N_MAP) {
        static const char *const keys[] = {"file", "function", "instructions",
                                           "memory", NULL};
        sl_dsl__check_keys(L, v, "a hook", keys);
        fn = sl_dsl__mget(v, "file");
        if (!fn)
            sl_dsl__diag(L, v, "hook '%s': missing required key 'file'",
                         sl_dsl__show(sl_dsl__key_name(k)));
        const node *f = sl_dsl__mget(v, "function");
        if (f && sl_dsl__expect_kind(L, f, N_SCALAR, "function")) {
            if (!is_lua_name(f->s))
                sl_dsl__diag(L, f, "function: '%s' is not a Lua function name",
                             sl_dsl__show(f->s));
            else
                h->function = sl_dsl__arena_strdup(L->a, f->s);
        }
        const node *ins = sl_dsl__mget(v, "instructions");
        if (ins) {
            const char *iv = sl_dsl__read_value(L, ins, "instructions");
            long long x;
            if (iv && (sl_dsl__parse_ll(iv, &x) != 0 || x < 1000 ||
                       x > 1000000000000LL))
                sl_dsl__diag(L, ins,
                             "instructions: expected an integer between 1000 "
                             "and 1000000000000, got '%s'",
                             sl_dsl__show(iv));
            else if (iv)
                h->instruction_limit = x;
        }
        const node *mem = sl_dsl__mget(v, "memory");
        if (mem) sl_dsl__read_size(L, mem, "memory", &h->memory_limit);
    } else if (v->kind != N_SCALAR) {
        sl_dsl__diag(L, v,
                     "hook '%s': expected a file name or a mapping with file "
                     "and function, got %s",
                     sl_dsl__show(sl_dsl__key_name(k)), sl_dsl__describe(v));
        return;
    }
    if (!fn) return;
    L->env_missing = 0;
    const char *file = sl_dsl__read_value(L, fn, "file");
    if (!file || L->env_missing) return;
    if (!*file) {
        sl_dsl__diag(L, fn,
                     "file: expected a Lua file name, got an empty value");
        return;
    }
    h->file = file[0] == '/'
                  ? sl_dsl__arena_strdup(L->a, file)
                  : sl_dsl__arena_printf(L->a, "%s/%s", L->dir, file);
    const char *err = h->file ? compile_lua(L, h->file, file) : NULL;
    if (err)
        sl_dsl__diag(L, fn, "hook '%s': %s", sl_dsl__show(sl_dsl__key_name(k)),
                     err);
}

static const char *const provider_keys[] = {
    "handler", "with", "hooks", "sql_writes", "next", "when_env", NULL};

/* A handler name (never interpolated) into st->handler; an unknown one is
 * reported with the nearest registered name. */
static void read_handler(loader *L, const node *n, sl_stage *st) {
    if (!sl_dsl__expect_kind(L, n, N_SCALAR, "handler")) return;
    if (strstr(n->s, "${")) {
        sl_dsl__diag(L, n,
                     "handler '%s': ${...} interpolation is not allowed in "
                     "handler names (choose between handlers with 'providers')",
                     sl_dsl__show(n->s));
        return;
    }
    st->handler = sl_dsl__arena_strdup(L->a, n->s);
    if (sl_handler_find(n->s)) return;
    const char *const *names = sl_handler_names();
    const char *m = sl_model_nearest(n->s, names, sl_dsl__count_list(names));
    char list[512];
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; names[i] && o < sizeof list - 64; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "",
                              names[i]);
    if (m)
        sl_dsl__diag(L, n, "unknown handler '%s' (did you mean '%s'?)",
                     sl_dsl__show(n->s), m);
    else
        sl_dsl__diag(L, n, "unknown handler '%s' (registered: %s)",
                     sl_dsl__show(n->s), list);
}

/* What a stage runs: handler, with and hooks, read from the stage's own
 * mapping m or from one of its providers. `what` names the owner in
 * messages ("stage 'a'", "stage 'a', provider 'local'"); a missing
 * handler is reported at `at`. */
void sl_dsl__read_impl(loader *L, const node *m, const node *at,
                       const char *what, int is_stage, sl_stage *st) {
    assert(L && m && m->kind == N_MAP && at && what && st);
    const node *n, *run_hook_at = NULL;
    if (!(n = sl_dsl__mget(m, "handler")))
        sl_dsl__diag(L, at, "%s: missing required key 'handler'%s", what,
                     is_stage ? " (or 'providers', a choice of handlers)" : "");
    else
        read_handler(L, n, st);
    if ((n = sl_dsl__mget(m, "with")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "with")) {
        json_t *w = sl_dsl__to_json(L, n);
        if (w) {
            json_decref(st->with);
            st->with = w;
        }
    }
    if ((n = sl_dsl__mget(m, "hooks")) &&
        sl_dsl__expect_kind(L, n, N_MAP, "hooks")) {
        if (n->n > MAX_HOOKS) {
            sl_dsl__diag(L, n, "hooks: at most %d hooks, got %zu", MAX_HOOKS,
                         n->n);
        } else if (n->n) {
            st->hooks = sl_dsl__arena_alloc(L->a, n->n * sizeof *st->hooks);
            for (size_t i = 0; st->hooks && i < n->n; i++) {
                read_hook(L, n->keys[i], n->vals[i], &st->hooks[st->nhooks++]);
                if (!strcmp(sl_dsl__key_name(n->keys[i]), "run"))
                    run_hook_at = n->keys[i];
            }
        }
    }
    if (st->handler && !strcmp(st->handler, "lua") && !run_hook_at)
        sl_dsl__diag(L, sl_dsl__mget(m, "handler"),
                     "%s: handler 'lua' needs a 'run' hook (hooks: {run: "
                     "{file: ..., function: ...}})",
                     what);
}

static int is_env_name(const char *s) {
    if (!(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return 0;
    return strlen(s) <= 255;
}

/* A provider's when_env (a variable name or a list of them). Returns 1
 * when every variable is set and non-empty (or there is no when_env),
 * else 0 with the unset ones in *missing ("A, B"; tree arena); -1 after
 * a diagnostic. */
static int read_when_env(loader *L, const node *n, const char **missing) {
    *missing = NULL;
    if (!n) return 1;
    const node *const *items = (const node *const *)&n;
    size_t cnt = 1;
    if (n->kind == N_SEQ) {
        items = (const node *const *)n->vals;
        cnt = n->n;
        if (cnt == 0) {
            sl_dsl__diag(
                L, n,
                "when_env: expected the names of environment variables, "
                "got an empty list");
            return -1;
        }
        if (cnt > MAX_WHEN_ENV) {
            sl_dsl__diag(L, n, "when_env: at most %d variables, got %zu",
                         MAX_WHEN_ENV, cnt);
            return -1;
        }
    } else if (n->kind != N_SCALAR) {
        sl_dsl__diag(
            L, n,
            "when_env: expected an environment variable name or a list of "
            "them, got %s",
            sl_dsl__describe(n));
        return -1;
    }
    char buf[1024];
    size_t o = 0;
    int ok = 1, bad = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cnt; i++) {
        const node *it = items[i];
        if (!sl_dsl__expect_kind(L, it, N_SCALAR, "when_env")) {
            bad = 1;
            continue;
        }
        if (!is_env_name(it->s)) {
            sl_dsl__diag(L, it,
                         "when_env: '%s' is not an environment variable name "
                         "(letters, digits and '_'; no ${...})",
                         sl_dsl__show(it->s));
            bad = 1;
            continue;
        }
        const char *v = getenv(it->s);
        if (v && *v) continue;
        ok = 0;
        if (o < sizeof buf - 80)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s",
                                  o ? ", " : "", sl_dsl__show(it->s));
    }
    if (bad) return -1;
    if (!ok) *missing = sl_dsl__arena_strdup(L->t, buf);
    return ok;
}

/* The index of the chosen provider, or -1 after a diagnostic: the one
 * `want` names (pv: the `provider` node), or with want NULL the first whose
 * when_env variables are all set (fits[i] == 1; pk: the `providers` key).
 * missing[i] lists provider i's unset variables. */
static int choose_provider(loader *L, const node *pv, const node *pk,
                           const char *want, const char *const *names,
                           const char *const *missing, const int *fits,
                           size_t np, const char *sname) {
    assert(names && missing && fits && np > 0);
    int chosen = -1;
    if (want) {
        for (size_t i = 0; i < np && chosen < 0; i++)
            if (!strcmp(names[i], want)) chosen = (int)i;
        if (chosen < 0) {
            char list[512];
            size_t o = 0;
            list[0] = '\0';
            for (size_t i = 0; i < np && o < sizeof list - 80; i++)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s",
                                      i ? ", " : "", sl_dsl__show(names[i]));
            sl_dsl__diag(
                L, pv,
                "provider '%s': stage '%s' has no such provider (choices: "
                "%s, or auto)%s",
                sl_dsl__show(want), sname, list,
                sl_dsl__did_you_mean(want, names, np));
        }
    } else {
        for (size_t i = 0; i < np && chosen < 0; i++)
            if (fits[i] == 1) chosen = (int)i;
        int invalid = 0;
        for (size_t i = 0; i < np; i++)
            if (fits[i] < 0) invalid = 1;
        if (chosen < 0 && !invalid) {
            char why[700];
            size_t o = 0;
            why[0] = '\0';
            for (size_t i = 0; i < np && o < sizeof why - 160; i++)
                o += (size_t)snprintf(
                    why + o, sizeof why - o, "%s'%s' needs %s", i ? "; " : "",
                    sl_dsl__show(names[i]), missing[i] ? missing[i] : "?");
            sl_dsl__diag(
                L, pk,
                "stage '%s': no provider qualifies: %s (set the variables, "
                "choose one with 'provider', or add a provider without "
                "when_env last, as the fallback)",
                sname, why);
        }
    }
    return chosen;
}

/* Reads `providers:` and chooses one: the one `provider:` names, or (auto)
 * the first in order whose when_env variables are all set and non-empty.
 * The chosen provider fills st (handler, with, hooks, next); every other
 * one is read into a scratch stage and checked the same way (handler
 * registered, hooks compile, next targets exist), except that an unset
 * ${VAR} in it is no error. Returns the chosen provider's sql_writes, or
 * -1 when it does not set it. */
int sl_dsl__read_providers(loader *L, const node *v, const char *sname,
                           sl_stage *st, stage_aux *ax) {
    assert(L && v && v->kind == N_MAP && sname && st && ax);
    const node *pk = sl_dsl__mkey(v, "providers"),
               *provs = sl_dsl__mget(v, "providers");
    const node *pv = sl_dsl__mget(v, "provider");
    int sql_writes = -1, bad = 0, chosen = -1;
    if (!sl_dsl__expect_kind(L, provs, N_MAP, "providers")) return -1;
    if (provs->n == 0) {
        sl_dsl__diag(
            L, provs,
            "providers: expected at least one provider (name: {handler: "
            "...})");
        return -1;
    }
    if (provs->n > MAX_PROVIDERS) {
        sl_dsl__diag(L, provs, "providers: at most %d providers, got %zu",
                     MAX_PROVIDERS, provs->n);
        return -1;
    }
    size_t np = provs->n;
    const char **names = sl_dsl__arena_alloc(L->t, (np + 1) * sizeof *names);
    const char **missing = sl_dsl__arena_alloc(L->t, np * sizeof *missing);
    int *fits = sl_dsl__arena_alloc(L->t, np * sizeof *fits);
    if (!names || !missing || !fits) return -1;

    /* The requested provider: a name, or auto (also when empty). */
    const char *want = NULL;
    if (pv) {
        const char *x = sl_dsl__read_value(L, pv, "provider");
        if (!x)
            bad = 1;
        else if (*x && strcmp(x, "auto") != 0)
            want = x;
    }
    for (size_t i = 0; i < np; i++) {
        const node *nk = provs->keys[i], *pm = provs->vals[i];
        names[i] = sl_dsl__key_name(nk);
        if (sl_dsl__check_ident(L, nk, names[i], "provider name", ID_NAME) != 0)
            bad = 1;
        else if (!strcmp(names[i], "auto")) {
            sl_dsl__diag(
                L, nk,
                "provider name 'auto' is reserved ('provider: auto' picks "
                "the first provider whose when_env variables are set)");
            bad = 1;
        }
        fits[i] =
            pm->kind == N_MAP
                ? read_when_env(L, sl_dsl__mget(pm, "when_env"), &missing[i])
                : -1;
    }
    if (want || !bad)
        chosen =
            choose_provider(L, pv, pk, want, names, missing, fits, np, sname);

    for (size_t i = 0; i < np; i++) {
        const node *nk = provs->keys[i], *pm = provs->vals[i], *n;
        if (!sl_dsl__expect_kind(L, pm, N_MAP, "provider")) continue;
        sl_dsl__check_keys(L, pm, "a provider", provider_keys);
        char what[200];
        snprintf(what, sizeof what, "stage '%s', provider '%s'", sname,
                 sl_dsl__show(names[i]));
        int is_chosen = (int)i == chosen;
        sl_stage scratch;
        memset(&scratch, 0, sizeof scratch);
        scratch.name = st->name;
        scratch.with = json_object();
        sl_stage *into = is_chosen ? st : &scratch;
        L->lenient_env = !is_chosen;
        sl_dsl__read_impl(L, pm, nk, what, 0, into);
        if ((n = sl_dsl__mget(pm, "next"))) {
            next_set *set = sl_dsl__read_next(L, n, ax);
            if (set && is_chosen) {
                st->next = set->next;
                st->nnext = set->nnext;
            }
        }
        if ((n = sl_dsl__mget(pm, "sql_writes"))) {
            int b;
            if (is_chosen) {
                if (sl_dsl__read_bool(L, n, "sql_writes", &b) == 0)
                    sql_writes = b;
            } else if (n->kind != N_SCALAR || !strstr(n->s, "${")) {
                sl_dsl__read_bool(L, n, "sql_writes", &b);
            }
        }
        L->lenient_env = 0;
        json_decref(scratch.with);
    }
    if (chosen >= 0) st->provider = sl_dsl__arena_strdup(L->a, names[chosen]);
    return sql_writes;
}
