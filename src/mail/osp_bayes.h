/*
 * osp_bayes: Bayes tokenizer, token table and Robinson-Fisher classifier.
 *
 * Tokens.  osp_bayes_tokenize() turns a parsed message (osp_mime) into a
 * sorted, de-duplicated set of 64-bit token hashes:
 *   - words of the visible text, Unicode-aware lower-cased (ASCII, Latin-1,
 *     Latin Extended-A, Greek and Cyrillic capitals are folded), 3..40
 *     bytes; longer runs become one "skip:<first letter><length/10>" token;
 *   - header tokens prefixed by the header's name (Subject words, From/To
 *     addresses and domains, Received hosts and IP addresses, Content-Type,
 *     X-Mailer/User-Agent, Message-ID domain, Return-Path);
 *   - URL hosts and their parent domains, attachment declared and sniffed
 *     types and file-name extensions, MIME anomaly names;
 *   - optionally bigrams of adjacent words (OSP_BAYES_BIGRAMS).
 * With keep_text set, the token strings are kept so a verdict can be
 * explained (ospreyctl bayes explain); otherwise only hashes are stored.
 *
 * Counts.  An osp_bayes_t holds (account, token) -> spam/ham counts and
 * per-account message totals.  Account 0 holds the global counts: every
 * training vote counts for the account and for account 0.  It is the hot
 * in-memory table; the database (bayes_tokens) holds the truth.
 *
 * Classifier.  Each token's probability for an account uses the global
 * estimate as its prior (DESIGN.md):
 *   p_g   = Robinson f(w) from the global counts, prior x=0.5, strength s
 *   f(w)  = (s_u * p_g + n_u * p_u) / (s_u + n_u)
 * where p_u is the account's own ratio and n_u its count for the token.  A
 * new user thus gets everyone's votes; a user with data gets its own taste.
 * The most significant tokens (|f - 0.5| >= min_dev, at most max_tokens)
 * are combined with Fisher's chi-square method (as in SpamBayes), giving a
 * probability in [0, 1] and the tokens that decided it.
 *
 * Training is counted once per message (keyed by a hash of its token set):
 * learning the same message again changes nothing, learning it as the other
 * class moves its counts.  Not thread-safe for writers; classification may
 * run concurrently with other classifications.
 */
#ifndef OSP_BAYES_H
#define OSP_BAYES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "osp_mime.h"

#define OSP_BAYES_BIGRAMS 0x1u   /* add adjacent word pairs */

typedef struct osp_bayes_tokens {
    uint64_t *hash;      /* sorted, unique after osp_bayes_tokenize */
    size_t n, alloc;
    bool keep_text;
    char **text;         /* parallel to hash when keep_text (owned) */
} osp_bayes_tokens_t;

void osp_bayes_tokens_init(osp_bayes_tokens_t *t, bool keep_text);
void osp_bayes_tokens_close(osp_bayes_tokens_t *t);
/* Add one token "prefix" + s[0..len) (borrowed, copied if keep_text). */
void osp_bayes_tokens_add(osp_bayes_tokens_t *t, const char *prefix, const char *s, size_t len);
/* Sort and de-duplicate. */
void osp_bayes_tokens_finish(osp_bayes_tokens_t *t);
/* Tokenize a whole message into t (which is reset first), then finish. */
void osp_bayes_tokenize(const osp_mime_message_t *m, unsigned flags, osp_bayes_tokens_t *t);
/* Tokenize plain words of a UTF-8 text with a prefix (tests, headers). */
void osp_bayes_tokenize_text(osp_bayes_tokens_t *t, const char *prefix, const char *s,
                             size_t len, unsigned flags);
/* The 64-bit hash used for tokens (stable across versions and machines). */
uint64_t osp_bayes_hash(const void *data, size_t len, uint64_t seed);
/* The token string for hash h, or NULL (only with keep_text). */
const char *osp_bayes_tokens_text(const osp_bayes_tokens_t *t, uint64_t h);

typedef struct osp_bayes_params {
    double robinson_s;      /* strength of the 0.5 prior for global estimates (1.0) */
    double user_s;          /* strength of the global prior for a user's estimate (3.0) */
    double min_dev;         /* ignore tokens with |f - 0.5| below this (0.1) */
    unsigned max_tokens;    /* combine at most this many tokens (150) */
} osp_bayes_params_t;

void osp_bayes_params_default(osp_bayes_params_t *p);

typedef struct osp_bayes osp_bayes_t;

osp_bayes_t *osp_bayes_create(const osp_bayes_params_t *params);
void osp_bayes_free(osp_bayes_t **bp);

enum osp_bayes_train_result {
    OSP_BAYES_TRAINED,      /* counted for the first time */
    OSP_BAYES_UNCHANGED,    /* already counted as this class */
    OSP_BAYES_RETRAINED,    /* moved from the other class */
    OSP_BAYES_UNTRAINED,    /* removed (osp_bayes_untrain) */
    OSP_BAYES_NOT_TRAINED,  /* untrain of a message never trained */
};

/* Learn tokens as spam or ham for account (account > 0; 0 trains globally only). */
enum osp_bayes_train_result osp_bayes_train(osp_bayes_t *b, uint32_t account,
                                            const osp_bayes_tokens_t *t, bool spam,
                                            uint32_t day);
enum osp_bayes_train_result osp_bayes_untrain(osp_bayes_t *b, uint32_t account,
                                              const osp_bayes_tokens_t *t);

/* One token's contribution, for explanations. */
typedef struct osp_bayes_clue {
    uint64_t hash;
    double prob;            /* f(w) used */
    uint32_t spam, ham;     /* the account's counts (global when account is 0) */
    uint32_t gspam, gham;   /* global counts */
} osp_bayes_clue_t;

typedef struct osp_bayes_result {
    double prob;            /* spam probability, 0..1; 0.5 when no clue */
    size_t n_clues;
    osp_bayes_clue_t *clues;    /* owned; sorted by significance */
} osp_bayes_result_t;

/* Classify tokens for account; res must be closed with osp_bayes_result_close. */
void osp_bayes_classify(const osp_bayes_t *b, uint32_t account, const osp_bayes_tokens_t *t,
                        osp_bayes_result_t *res);
void osp_bayes_result_close(osp_bayes_result_t *res);

/* Counts for one token; 0/0 when unknown. */
void osp_bayes_counts(const osp_bayes_t *b, uint32_t account, uint64_t h,
                      uint32_t *spam_r, uint32_t *ham_r);
void osp_bayes_totals(const osp_bayes_t *b, uint32_t account, uint32_t *nspam_r,
                      uint32_t *nham_r);
/* Tokens stored (all accounts). */
size_t osp_bayes_size(const osp_bayes_t *b);
/*
 * Drop tokens last seen before day min_day whose total count is at most
 * max_count (hapaxes and other rare, stale tokens).  Returns how many.
 */
size_t osp_bayes_expire(osp_bayes_t *b, uint32_t min_day, uint32_t max_count);

/* Fisher chi-square survival function Q(x2, v) for even v (exposed for tests). */
double osp_bayes_chi2q(double x2, unsigned v);

#endif
