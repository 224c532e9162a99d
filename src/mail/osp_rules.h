/*
 * osp_rules: the rules language of the scanning engine (CanIt-style).
 *
 * A rule file is a sequence of statements; '#' starts a comment that runs
 * to the end of the line, and statements may span lines.
 *
 *   file      := { statement }
 *   statement := "rule" NAME ":" expr "=>" outcome
 *              | "disable" NAME
 *   outcome   := ( "score" NUMBER [ "action" ACTION ]
 *                | "action" ACTION [ "score" NUMBER ] ) [ STRING ]
 *   expr      := group { "or" group }
 *   group     := unary { "and" unary }
 *   unary     := "not" unary | "(" expr ")" | clause
 *   clause    := field [ "not" ] relation [ value ]
 *   field     := NAME | "header" STRING
 *   relation  := "is" [ "not" ] | "contains" | "matches" | "in"
 *              | "<" | ">" | "<=" | ">=" | "exists"
 *   value     := STRING | NUMBER | REGEX | "[" STRING { "," STRING } "]"
 *
 *   rule FORGED_OUTLOOK_ID: header "X-Mailer" contains "Outlook"
 *       and header "Message-ID" not matches /^<[0-9A-F]{28}@/
 *       => score 2.5 "Outlook X-Mailer with a non-Outlook Message-ID"
 *   rule BLOCK_EXE: attachment.name matches /\.(exe|scr|pif)$/i
 *       => action quarantine
 *
 * NAME is [A-Za-z_][A-Za-z0-9_.]*; STRING is "..." with \" \\ \n \t
 * escapes; NUMBER is [-+]digits[.digits] with an optional k, m or g suffix
 * (x1024); REGEX is /PCRE2 pattern/ with flags i (caseless), m (multiline),
 * s (dot matches newline), x (extended); "\/" stands for '/'.  "and" binds
 * tighter than "or".  The description defaults to the rule name.
 *
 * Fields (S string, M multi-valued string, N number, IP address):
 *   sender          envelope sender ("" is the null sender)     S
 *   recipient  envelope recipients                              M
 *   client.address / client.name / helo                         IP / S / S
 *   header "Name"   every top-level field of that name, decoded M
 *   subject         the first Subject field, decoded            S
 *   from.name / from.address / from.domain   From mailboxes     M
 *   to.name / to.address / to.domain         To mailboxes       M
 *   body / body.invisible   visible text / hidden HTML text     S
 *   url / url.host          normalised URLs / their hosts       M (host: IP)
 *   attachment.name / attachment.type / attachment.sniffed      M
 *   part.type / part.encoding / part.charset   of leaf parts    M
 *   size, bayes, recipient.count, url.count, attachment.count   N
 *   spf / dkim / dmarc      results supplied by the caller      S
 *   dnsbl                   names of the lists that hit         M
 *   anomaly                 MIME anomalies (osp_mime_anomaly_name) M
 * A field has no value when the caller did not supply it (NULL), when
 * there is no parsed message for message fields, and bayes has none when
 * negative.
 *
 * Relations: "is" (whole value) and "contains" (substring) compare
 * ignoring ASCII case; on numbers "is" is equality.  "matches" is a PCRE2
 * regex, case-sensitive unless /i, JIT-compiled, searched anywhere in the
 * value (anchor with ^ and $).  "in" takes one or more CIDR prefixes
 * (IPv4 and IPv6; a string may hold several separated by blanks or
 * commas) and applies to IP fields.  "<", ">", "<=", ">=" apply to numbers.
 * "exists": the field has at least one value (a header is present, bayes
 * was computed, an anomaly is set).  For "anomaly", "is" and "contains"
 * take an anomaly name and test that bit.
 *
 * Multi-valued fields: a positive relation holds if ANY value satisfies
 * it.  A negated relation ("is not", "not contains", "not matches",
 * "not in", "not exists") is exactly the negation of the positive one:
 * it holds when NO value satisfies it, hence also when the field has no
 * value at all.  `recipient is not "a@x"` means no recipient is a@x;
 * `header "Message-ID" not matches /@/` also holds when there is no
 * Message-ID (add `header "Message-ID" exists and` to require one).
 *
 * Outcome: a rule that holds adds its score (may be negative) to the
 * total and proposes its action.  Actions, weakest first: deliver (the
 * default, no effect), tag, discard, quarantine, reject; the result is
 * the strongest action proposed.  Quarantine outranks discard because it
 * keeps a copy.  A message is spam when the total (rules plus whatever
 * the caller adds) reaches OSP_RULES_SPAM_THRESHOLD (5.0) by default.
 *
 * Compilation (osp_rules_compile) reports every error of the file as
 * "FILE:LINE:COL: message" lines, resynchronising at the next "rule" or
 * "disable"; regex errors quote PCRE2's message and offset.  Within every
 * "and"/"or" group, operands are reordered by estimated cost (envelope and
 * number tests first, then headers, URLs and attachments, then body text;
 * regexes cost more than substring tests) and evaluation short-circuits.
 * Clauses have no side effects, so order never changes a result.
 *
 * Regex safety: every match runs with a match limit and a depth limit.  A
 * match that exceeds them (or fails otherwise) counts as an error: the
 * rule containing it does not hit, whatever its logic, and the result's
 * n_errors / error_rule say so.
 *
 * Rule sets and accounts: a compiled set (osp_rules_t) is immutable and
 * may be shared by any number of threads.  Everything an evaluation
 * writes lives in an osp_rules_scratch_t (PCRE2 match data and cached
 * derived values) that belongs to one thread at a time (keep one per
 * worker thread) and in the caller's osp_rules_result_t.
 * osp_rules_eval_sets() evaluates an account chain (global, reseller,
 * client, user) in order: a rule of a later set replaces every rule of
 * the same name in earlier sets, and "disable NAME" in a later set
 * removes it; rules then count once, in order of the sets.
 */
#ifndef OSP_RULES_H
#define OSP_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "osp_mime.h"

#define OSP_RULES_SPAM_THRESHOLD 5.0

/* Actions, weakest first: comparisons between them are meaningful. */
enum osp_rules_action {
    OSP_RULES_DELIVER = 0,
    OSP_RULES_TAG,
    OSP_RULES_DISCARD,
    OSP_RULES_QUARANTINE,
    OSP_RULES_REJECT,
};

/* "deliver", "tag", ... (static). */
const char *osp_rules_action_name(enum osp_rules_action a);

/* Regex limits per match; zero fields mean the defaults. */
typedef struct osp_rules_options {
    uint32_t match_limit;       /* pcre2_set_match_limit: 100000 */
    uint32_t depth_limit;       /* pcre2_set_depth_limit: 2000 */
} osp_rules_options_t;

typedef struct osp_rules osp_rules_t;

/*
 * Compile len bytes of rule text (borrowed for the call).  filename
 * (NULL: "rules") prefixes error lines.  On success returns the set (the
 * caller owns it).  On error returns NULL and appends every error to
 * errors as "FILE:LINE:COL: message\n" (errors may be NULL); *n_errors_r
 * (may be NULL) gets their number in both cases.
 */
osp_rules_t *osp_rules_compile(const char *src, size_t len, const char *filename,
                               const osp_rules_options_t *opts,
                               osp_buf_t *errors, size_t *n_errors_r);

/*
 * Read and compile a file.  A file that cannot be read is one error
 * ("FILE: cannot read: strerror").
 */
osp_rules_t *osp_rules_load_file(const char *path, const osp_rules_options_t *opts,
                                 osp_buf_t *errors, size_t *n_errors_r);

void osp_rules_free(osp_rules_t **rulesp);

/* Rules in the set (disable statements not counted). */
size_t osp_rules_count(const osp_rules_t *rules);
/* The i-th rule's name and description (borrowed), or NULL. */
const char *osp_rules_name(const osp_rules_t *rules, size_t i);

/*
 * What the evaluation looks at.  A plain struct the caller fills: start
 * with osp_rules_ctx_init() (everything absent, bayes -1).  All pointers
 * are borrowed for the evaluation.
 */
typedef struct osp_rules_ctx {
    const char *sender;                 /* NULL unknown, "" null sender */
    const char *const *recipients;
    size_t n_recipients;
    const char *client_address;         /* text form, e.g. "192.0.2.1" */
    const char *client_name;            /* "unknown" if no PTR, as Postfix */
    const char *helo;
    const osp_mime_message_t *msg;      /* NULL: message fields absent */
    size_t size;                        /* 0: msg->size */
    const char *spf, *dkim, *dmarc;     /* "pass", "fail", "none", ... */
    double bayes;                       /* spam probability 0..1, <0 none */
    const char *const *dnsbl;           /* names of the lists that hit */
    size_t n_dnsbl;
} osp_rules_ctx_t;

void osp_rules_ctx_init(osp_rules_ctx_t *ctx);

/* One rule that hit.  Strings are borrowed from the rule set. */
typedef struct osp_rules_hit {
    const char *name;
    const char *description;
    double score;
    enum osp_rules_action action;
} osp_rules_hit_t;

/*
 * Evaluation output, embedded in the caller's struct:
 * osp_rules_result_init / osp_rules_result_close.  Valid while the rule
 * sets it was computed from live.
 */
typedef struct osp_rules_result {
    double score;                   /* sum of the hits' scores */
    enum osp_rules_action action;   /* strongest action of the hits */
    osp_rules_hit_t *hits;          /* in evaluation order */
    size_t n_hits;
    unsigned n_errors;              /* rules skipped because of a regex error */
    const char *error_rule;         /* the first such rule, or NULL */
    size_t hits_alloc_;
} osp_rules_result_t;

void osp_rules_result_init(osp_rules_result_t *r);
void osp_rules_result_close(osp_rules_result_t *r);
/* Empty it for another evaluation, keeping the allocation. */
void osp_rules_result_reset(osp_rules_result_t *r);

/* Per-thread evaluation scratch (see the top of this file). */
typedef struct osp_rules_scratch osp_rules_scratch_t;
osp_rules_scratch_t *osp_rules_scratch_create(void);
void osp_rules_scratch_free(osp_rules_scratch_t **sp);

/*
 * Evaluate one set and add its hits to result (which is not reset, so
 * unrelated sets can be accumulated).  ctx and the message must not
 * change during the call.
 */
void osp_rules_eval(const osp_rules_t *rules, const osp_rules_ctx_t *ctx,
                    osp_rules_scratch_t *scratch, osp_rules_result_t *result);

/*
 * Evaluate an ordered chain of sets (least specific first) with override
 * by name and "disable", adding to result.  NULL entries are skipped.
 */
void osp_rules_eval_sets(const osp_rules_t *const *sets, size_t n_sets,
                         const osp_rules_ctx_t *ctx, osp_rules_scratch_t *scratch,
                         osp_rules_result_t *result);

#endif
