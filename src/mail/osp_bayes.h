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
 *   - URL hosts and their parent domains, words of URL paths ("urlp:"),
 *     URL oddities (hxxp, IP host, userinfo...), links whose anchor text
 *     names another host, words of invisible HTML text ("inv:");
 *   - attachment declared and sniffed types and file-name extensions, MIME
 *     anomaly names;
 *   - optionally (experiments: bench/bayes says they hurt on the
 *     SpamAssassin corpus) bigrams of adjacent words (OSP_BAYES_BIGRAMS),
 *     sparse bigrams "a * c" (OSP_BAYES_SPARSE), and the words of every
 *     other header (OSP_BAYES_ALLHEADERS).
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
 * The most significant tokens (|f - 0.5| >= min_dev, at most max_tokens,
 * seen at least min_count times by everyone) are combined with Fisher's
 * chi-square method (as in SpamBayes), giving a probability in [0, 1] and
 * the tokens that decided it.
 *
 * Training is counted once per message (keyed by a hash of its token set):
 * learning the same message again changes nothing, learning it as the other
 * class moves its counts.  Not thread-safe for writers; classification may
 * run concurrently with other classifications.
 *
 * Stores.  The table is one implementation of osp_bayes_store_t (look up a
 * batch of hashes for (account, account 0); train a message), the narrow
 * interface a database store implements with the two statements of
 * sql/004_bayes.sql.  Classification is osp_bayes_lookup (or the store's
 * lookup) followed by osp_bayes_score, pure arithmetic, so an asynchronous
 * store can run the lookup on the loop and score on its answer.
 *
 * Use:
 *   osp_bayes_tokens_t t;  osp_bayes_tokens_init(&t, false);
 *   osp_bayes_tokenize(msg, 0, &t);
 *   osp_bayes_classify(b, account, &t, &res);  ... res.prob, res.clues ...
 *   osp_bayes_result_close(&res);  osp_bayes_tokens_close(&t);
 */
#ifndef OSP_BAYES_H
#define OSP_BAYES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osp_buf.h"
#include "osp_mime.h"

#define OSP_BAYES_BIGRAMS 0x1u     /* add adjacent word pairs */
#define OSP_BAYES_ALLHEADERS 0x2u  /* words of every other header, by name */
#define OSP_BAYES_SPARSE 0x4u      /* add pairs of words one apart ("a * c") */

typedef struct osp_bayes_tokens {
    uint64_t *hash;      /* sorted, unique after osp_bayes_tokenize */
    size_t n, alloc;
    bool keep_text;
    char **text;         /* parallel to hash when keep_text (owned) */
    uint64_t *trace;     /* the tokens of trace fields (Received:), sorted, unique */
    size_t ntrace, trace_alloc;
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
    unsigned min_count;     /* ignore tokens seen fewer times by everyone (1) */
    /* Autolearn (osp_bayes_autolearn): on the score WITHOUT Bayes. */
    double autolearn_spam;  /* learn as spam at or above this rules score (12.0) */
    double autolearn_ham;   /* learn as ham at or below this rules score (-2.0) */
    double autolearn_sure;  /* skip when Bayes already agrees within this of 0/1 (0.001) */
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

/*
 * The message key that makes training idempotent: 32 bytes (the size of
 * bayes_trained.message_hash) derived from the sorted token set without
 * the tokens of trace fields (Received:, which carry queue ids, dates and
 * relays that change each time a message is sent), so the same message
 * re-sent, or arriving over another path, still counts once.  Not a
 * cryptographic hash (it only keys one account's own training votes).
 */
#define OSP_BAYES_KEY_LEN 32
void osp_bayes_message_key(const osp_bayes_tokens_t *t, uint8_t key_r[OSP_BAYES_KEY_LEN]);

/*
 * A whole message as bytes (data[0..len), borrowed) tokenized into t
 * (reset first) exactly as osprey-filter does before it classifies:
 * osp_mime_parse with default limits, osp_bayes_tokenize without flags.
 * Used wherever a stored or submitted message is trained or explained
 * (ospreyctl bayes, osprey-worker "train" jobs).
 */
void osp_bayes_tokenize_message(const void *data, size_t len, osp_bayes_tokens_t *t);

/*
 * Training into the database: OSP_BAYES_TRAIN_SQL with text parameters
 * $1 account, $2 message key, $3 "true" (spam) or "false" (ham), $4 token
 * hashes.  osp_bayes_train_params() writes $2 for tokens t as a bytea
 * literal "\x..." into key_r, and $4 as a bigint[] literal of the hashes'
 * signed values into array_r (initialised by the caller; reset first).
 */
#define OSP_BAYES_TRAIN_SQL \
    "SELECT osprey_bayes_train($1::bigint, $2::bytea, $3::boolean, $4::bigint[])"
#define OSP_BAYES_KEY_HEX_SIZE (2 * OSP_BAYES_KEY_LEN + 3)
void osp_bayes_train_params(const osp_bayes_tokens_t *t, char key_r[OSP_BAYES_KEY_HEX_SIZE],
                            osp_buf_t *array_r);

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
    uint32_t spam, ham;     /* the account's own counts (0/0 for account 0) */
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

/* ------------------------------------------------------------------
 * Token store interface.  Classification is split in two so that any
 * store can feed it, synchronous (this in-memory table) or asynchronous
 * (the database, 004_bayes.sql):
 *   1. look up the message's token hashes for (account, account 0): one
 *      osp_bayes_count_t per hash, plus the two accounts' message totals;
 *   2. osp_bayes_score(): pure arithmetic over those counts.
 * Training hands a store (account, message key, class, token hashes),
 * exactly the arguments of osprey_bayes_train().
 */
typedef struct osp_bayes_count {
    uint32_t spam, ham;     /* the account's own counts (0/0 for account 0) */
    uint32_t gspam, gham;   /* account 0: everyone's counts */
} osp_bayes_count_t;

typedef struct osp_bayes_store {
    void *ctx;
    /*
     * Fill counts_r[i] for hashes[i] (i < n) and totals_r with message
     * counts (spam/ham for account, gspam/gham for account 0).  Unknown
     * tokens are 0/0.  Returns 0, or -1 on a temporary failure with a
     * static message in *error_r (the caller then scans without Bayes).
     */
    int (*lookup)(void *ctx, uint32_t account, const uint64_t *hashes, size_t n,
                  osp_bayes_count_t *counts_r, osp_bayes_count_t *totals_r,
                  const char **error_r);
    /*
     * Count a message (as osprey_bayes_train: for account and account 0,
     * once per key; the other class's earlier vote is taken back) or, with
     * forget, remove its vote.  Returns 0 with *result_r, or -1 (*error_r).
     */
    int (*train)(void *ctx, uint32_t account, const uint8_t key[OSP_BAYES_KEY_LEN],
                 bool spam, bool forget, const uint64_t *hashes, size_t n, uint32_t day,
                 enum osp_bayes_train_result *result_r, const char **error_r);
} osp_bayes_store_t;

/* A store over the in-memory table b (borrowed: b must outlive the store). */
void osp_bayes_store_memory(osp_bayes_t *b, osp_bayes_store_t *store_r);

/* Step 1 on the in-memory table (never fails). */
void osp_bayes_lookup(const osp_bayes_t *b, uint32_t account, const uint64_t *hashes,
                      size_t n, osp_bayes_count_t *counts_r, osp_bayes_count_t *totals_r);
/*
 * Step 2: the verdict for hashes[0..n) from their counts (borrowed).
 * account_data says whether the spam/ham fields are a user's own counts
 * (false for account 0).  res must be closed with osp_bayes_result_close.
 */
void osp_bayes_score(const osp_bayes_params_t *p, const uint64_t *hashes, size_t n,
                     const osp_bayes_count_t *counts, const osp_bayes_count_t *totals,
                     bool account_data, osp_bayes_result_t *res);
/* Steps 1 and 2 through any store; -1 (and res->prob 0.5) on failure. */
int osp_bayes_classify_store(const osp_bayes_store_t *store, const osp_bayes_params_t *p,
                             uint32_t account, const osp_bayes_tokens_t *t,
                             osp_bayes_result_t *res, const char **error_r);
const osp_bayes_params_t *osp_bayes_params(const osp_bayes_t *b);

/*
 * Autolearn: whether to train a scanned message, from the score of the
 * other tests (rules_score must NOT include Bayes bands, or Bayes would
 * teach itself) and the Bayes probability.  Spam at or above
 * autolearn_spam, ham at or below autolearn_ham, and nothing when Bayes is
 * already sure of that class (within autolearn_sure of 1 or 0): training
 * what it already knows only grows the table.
 */
enum osp_bayes_autolearn {
    OSP_BAYES_LEARN_NONE,
    OSP_BAYES_LEARN_SPAM,
    OSP_BAYES_LEARN_HAM,
};
enum osp_bayes_autolearn osp_bayes_autolearn(const osp_bayes_params_t *p, double rules_score,
                                             double bayes_prob);

/*
 * A local token file (ospreyctl bayes, benchmarks): the whole table and
 * the trained-message keys in native byte order, written to PATH.tmp and
 * renamed.  Load returns NULL with errno set and a message in *error_r
 * (ENOENT: no file yet).  params as for osp_bayes_create.
 */
int osp_bayes_save(const osp_bayes_t *b, const char *path, const char **error_r);
osp_bayes_t *osp_bayes_load(const char *path, const osp_bayes_params_t *params,
                            const char **error_r);

/*
 * Fill the table as a cache of a store's rows (e.g. bayes_tokens and
 * bayes_totals read from the database): set, not add.  0/0 removes the
 * row.  h must be a token hash (not 0).
 */
void osp_bayes_put(osp_bayes_t *b, uint32_t account, uint64_t h, uint32_t spam, uint32_t ham,
                   uint32_t day);
void osp_bayes_put_totals(osp_bayes_t *b, uint32_t account, uint32_t nspam, uint32_t nham);

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
