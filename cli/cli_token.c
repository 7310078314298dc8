/* cli_token.c - `sluice token SUBJECT [--ttl 15m] [--pipeline NAME]`: a
 * subject token for the progress widget's event stream (webauth.h),
 * signed with SLUICE_TOKEN_SECRET. The application normally mints these itself
 * (docs/web.md); this command is for scripts and trying things out. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "jobs.h"
#include "webauth.h"

static void token_usage(FILE *f) {
    fprintf(f, "usage: sluice token SUBJECT [--ttl DURATION] [--pipeline NAME "
               "[-p PATH]...] [--json]\n"
               "  --ttl DURATION   how long the token is valid (default "
               "15m)\n"
               "  --pipeline NAME  the subject's pipeline: required when its "
               "subject.key_type\n"
               "                   is not uuid (the token then signs "
               "NAME/SUBJECT)\n"
               "  --json           print {\"token\", \"subject\", "
               "\"expires_at\"}\n"
               "Prints a subject token for /api/subjects/PIPELINE/SUBJECT/"
               "events, signed\nwith SLUICE_TOKEN_SECRET (docs/web.md).\n");
}

/* 1 when argv names a pipeline (--pipeline), so the definitions are
 * needed; without it the subject must be a UUID and nothing is loaded. */
static int names_pipeline(int argc, char **argv) {
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--pipeline") == 0 ||
            strncmp(argv[i], "--pipeline=", 11) == 0)
            return 1;
    return 0;
}

/* The text the token signs for subject arg (webauth.h) into out, or the
 * exit code after saying why not. */
static int token_subject(const sl_model *m, const char *pipeline,
                         const char *arg, char out[SL_WEBAUTH_SUBJECT_MAX]) {
    char key[SL_KEY_MAX];
    const char *why;
    if (!pipeline) {
        if (sl_key_canon(SL_KEY_UUID, arg, key, &why) != 0) {
            sl_cli_say("token", "'%s' is not a UUID (for a subject with a "
                                "bigint, integer or text key, name its "
                                "pipeline with --pipeline)",
                       arg);
            return SL_EXIT_USAGE;
        }
        snprintf(out, SL_WEBAUTH_SUBJECT_MAX, "%s", key);
        return 0;
    }
    const sl_pipeline *p = sl_cli_find_pipeline("token", m, pipeline);
    if (!p) return SL_EXIT_USAGE;
    if (!p->has_subject) {
        sl_cli_say("token", "pipeline %s has no subject", p->name);
        return SL_EXIT_USAGE;
    }
    if (sl_key_canon(p->subject.key_type, arg, key, &why) != 0) {
        sl_cli_say("token", "'%s' is not %s (the key type of pipeline %s)",
                   arg, why, p->name);
        return SL_EXIT_USAGE;
    }
    if (sl_webauth_subject_text(p, key, out, SL_WEBAUTH_SUBJECT_MAX) != 0)
        return SL_EXIT_USAGE; /* cannot happen: the sizes add up */
    return 0;
}

int sl_cmd_token(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        token_usage(stdout);
        return SL_EXIT_OK;
    }
    sl_model *m = NULL;
    int rc;
    if (names_pipeline(argc, argv) && (rc = sl_cli_load(&argc, argv, &m)) != 0)
        return rc;
    int64_t ttl_ms = 15 * 60 * 1000;
    const char *pipeline = NULL;
    static const struct option opts[] = {{"ttl", required_argument, 0, 't'},
                                         {"pipeline", required_argument, 0, 'P'},
                                         {"json", no_argument, 0, 'j'},
                                         {0, 0, 0, 0}};
    int ch, as_json = 0;
    char text[SL_WEBAUTH_SUBJECT_MAX];
    rc = SL_EXIT_USAGE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        if (ch == 'P') {
            pipeline = optarg;
            continue;
        }
        if (ch == 'j') {
            as_json = 1;
            continue;
        }
        if (ch != 't') {
            token_usage(stderr);
            goto out;
        }
        if (sl_cli_parse_duration("token", "--ttl", optarg, &ttl_ms) != 0)
            goto out;
    }
    if (optind != argc - 1) {
        token_usage(stderr);
        goto out;
    }
    if ((rc = token_subject(m, pipeline, argv[optind], text)) != 0) goto out;
    rc = SL_EXIT_USAGE;
    const char *secret = getenv("SLUICE_TOKEN_SECRET");
    char tok[SL_WEBAUTH_TOKEN_MAX];
    int64_t expires = (int64_t)time(NULL) + ttl_ms / 1000;
    if (!secret || !secret[0] ||
        sl_webauth_mint(secret, text, expires, tok) != 0) {
        fprintf(stderr, "sluice token: set SLUICE_TOKEN_SECRET to the secret "
                        "the server checks tokens with\n");
        goto out;
    }
    if (as_json) {
        time_t t = (time_t)expires;
        struct tm tm;
        char at[40];
        gmtime_r(&t, &tm);
        strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
        sl_cli_json_print(json_pack("{s:s,s:s,s:s}", "token", tok, "subject",
                                    text, "expires_at", at),
                          0);
    } else {
        printf("%s\n", tok);
    }
    rc = SL_EXIT_OK;
out:
    sl_model_free(m);
    return rc;
}
