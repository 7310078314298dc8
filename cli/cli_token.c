/* cli_token.c - `sluice token SUBJECT [--ttl 15m]`: a subject token for
 * the progress widget's event stream (webauth.h), signed with
 * SLUICE_TOKEN_SECRET. The application normally mints these itself
 * (docs/web.md); this command is for scripts and trying things out. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli.h"
#include "cli_priv.h"
#include "error.h"
#include "jobs.h"
#include "webauth.h"

static void token_usage(FILE *f) {
    fprintf(f, "usage: sluice token SUBJECT [--ttl DURATION] [--json]\n"
               "  --ttl DURATION   how long the token is valid (default "
               "15m)\n"
               "  --json           print {\"token\", \"subject\", "
               "\"expires_at\"}\n"
               "Prints a subject token for /api/subjects/PIPELINE/SUBJECT/"
               "events, signed\nwith SLUICE_TOKEN_SECRET (docs/web.md).\n");
}

int sl_cmd_token(int argc, char **argv) {
    if (sl_cli_wants_help(argc, argv)) {
        token_usage(stdout);
        return SL_EXIT_OK;
    }
    int64_t ttl_ms = 15 * 60 * 1000;
    static const struct option opts[] = {{"ttl", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'},
                                         {0, 0, 0, 0}};
    int ch, as_json = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        if (ch == 'j') {
            as_json = 1;
            continue;
        }
        if (ch != 't') {
            token_usage(stderr);
            return SL_EXIT_USAGE;
        }
        if (sl_cli_parse_duration("token", "--ttl", optarg, &ttl_ms) != 0)
            return SL_EXIT_USAGE;
    }
    if (optind != argc - 1) {
        token_usage(stderr);
        return SL_EXIT_USAGE;
    }
    const char *subject = argv[optind];
    if (!sl_jobs_is_uuid(subject)) {
        fprintf(stderr, "sluice token: '%s' is not a UUID\n", subject);
        return SL_EXIT_USAGE;
    }
    const char *secret = getenv("SLUICE_TOKEN_SECRET");
    char tok[SL_WEBAUTH_TOKEN_MAX];
    int64_t expires = (int64_t)time(NULL) + ttl_ms / 1000;
    if (!secret || !secret[0] ||
        sl_webauth_mint(secret, subject, expires, tok) != 0) {
        fprintf(stderr, "sluice token: set SLUICE_TOKEN_SECRET to the secret "
                        "the server checks tokens with\n");
        return SL_EXIT_USAGE;
    }
    if (as_json) {
        time_t t = (time_t)expires;
        struct tm tm;
        char at[40];
        gmtime_r(&t, &tm);
        strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
        sl_cli_json_print(json_pack("{s:s,s:s,s:s}", "token", tok, "subject",
                                    subject, "expires_at", at),
                          0);
        return SL_EXIT_OK;
    }
    printf("%s\n", tok);
    return SL_EXIT_OK;
}
