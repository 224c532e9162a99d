/*
 * osp_rules: lexer, parser, compiler and evaluator of the rules language.
 * The language and its semantics are described in osp_rules.h and in
 * osprey-rules(5).
 */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#include "osp_addr.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"
#include "osp_rules.h"

#define DEFAULT_MATCH_LIMIT 100000
#define DEFAULT_DEPTH_LIMIT 2000
#define HEAP_LIMIT_KIB      20480
#define MAX_FILE_SIZE       (16u * 1024 * 1024)
#define MAX_NESTING         64

/* ---- Fields ----------------------------------------------------------- */

enum field_id {
    F_SENDER, F_RECIPIENT, F_CLIENT_ADDRESS, F_CLIENT_NAME, F_HELO,
    F_HEADER, F_SUBJECT,
    F_FROM_NAME, F_FROM_ADDRESS, F_FROM_DOMAIN,
    F_TO_NAME, F_TO_ADDRESS, F_TO_DOMAIN,
    F_BODY, F_BODY_INVISIBLE, F_URL, F_URL_HOST,
    F_ATT_NAME, F_ATT_TYPE, F_ATT_SNIFFED,
    F_PART_TYPE, F_PART_ENCODING, F_PART_CHARSET,
    F_SIZE, F_BAYES, F_RCPT_COUNT, F_URL_COUNT, F_ATT_COUNT,
    F_SPF, F_DKIM, F_DMARC, F_DNSBL, F_ANOMALY,
};

enum field_type { FT_STR, FT_IP, FT_NUM, FT_ANOMALY };

struct field_def {
    const char *name;
    enum field_id id;
    enum field_type type;
    unsigned cost;          /* relative cost of reading one value */
};

static const struct field_def fields[] = {
    { "sender", F_SENDER, FT_STR, 1 },
    { "recipient", F_RECIPIENT, FT_STR, 2 },
    { "client.address", F_CLIENT_ADDRESS, FT_IP, 1 },
    { "client.name", F_CLIENT_NAME, FT_STR, 1 },
    { "helo", F_HELO, FT_STR, 1 },
    { "header", F_HEADER, FT_STR, 3 },
    { "subject", F_SUBJECT, FT_STR, 3 },
    { "from.name", F_FROM_NAME, FT_STR, 4 },
    { "from.address", F_FROM_ADDRESS, FT_STR, 4 },
    { "from.domain", F_FROM_DOMAIN, FT_STR, 4 },
    { "to.name", F_TO_NAME, FT_STR, 4 },
    { "to.address", F_TO_ADDRESS, FT_STR, 4 },
    { "to.domain", F_TO_DOMAIN, FT_STR, 4 },
    { "body", F_BODY, FT_STR, 40 },
    { "body.invisible", F_BODY_INVISIBLE, FT_STR, 20 },
    { "url", F_URL, FT_STR, 8 },
    { "url.host", F_URL_HOST, FT_IP, 6 },
    { "attachment.name", F_ATT_NAME, FT_STR, 5 },
    { "attachment.type", F_ATT_TYPE, FT_STR, 5 },
    { "attachment.sniffed", F_ATT_SNIFFED, FT_STR, 5 },
    { "part.type", F_PART_TYPE, FT_STR, 5 },
    { "part.encoding", F_PART_ENCODING, FT_STR, 5 },
    { "part.charset", F_PART_CHARSET, FT_STR, 5 },
    { "size", F_SIZE, FT_NUM, 1 },
    { "bayes", F_BAYES, FT_NUM, 1 },
    { "recipient.count", F_RCPT_COUNT, FT_NUM, 1 },
    { "url.count", F_URL_COUNT, FT_NUM, 1 },
    { "attachment.count", F_ATT_COUNT, FT_NUM, 1 },
    { "spf", F_SPF, FT_STR, 1 },
    { "dkim", F_DKIM, FT_STR, 1 },
    { "dmarc", F_DMARC, FT_STR, 1 },
    { "dnsbl", F_DNSBL, FT_STR, 1 },
    { "anomaly", F_ANOMALY, FT_ANOMALY, 1 },
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

enum rel { R_IS, R_CONTAINS, R_MATCHES, R_IN, R_LT, R_GT, R_LE, R_GE, R_EXISTS };

static const char *const rel_names[] = {
    "is", "contains", "matches", "in", "<", ">", "<=", ">=", "exists",
};

static const char *const action_names[] = {
    "deliver", "tag", "discard", "quarantine", "reject",
};

const char *osp_rules_action_name(enum osp_rules_action a)
{
    if ((unsigned)a < sizeof(action_names) / sizeof(action_names[0]))
        return action_names[a];
    return "unknown";
}

/* ---- Compiled form ---------------------------------------------------- */

struct clause {
    const struct field_def *f;
    char *hname;                /* header field name */
    enum rel rel;
    bool neg;
    char *str;                  /* is/contains: lower-cased value */
    size_t slen;
    double num;
    pcre2_code *re;
    osp_cidrset_t *nets;
    uint64_t abit;              /* anomaly is/contains */
};

enum node_kind { N_AND, N_OR, N_NOT, N_CLAUSE };

struct node {
    enum node_kind kind;
    unsigned cost;
    struct node **kids;
    size_t n_kids;
    struct clause *cl;
};

struct rule {
    char *name;
    char *desc;
    double score;
    enum osp_rules_action action;
    struct node *expr;
    size_t line;
};

struct osp_rules {
    struct rule *rules;
    size_t n_rules, rules_alloc;
    char **disabled;            /* sorted */
    size_t n_disabled, disabled_alloc;
    const char **names;         /* sorted rule names */
    pcre2_match_context *mctx;
};


struct osp_rules_scratch {
    pcre2_match_data *md;
    const osp_rules_ctx_t *ctx;
    bool have_from, have_to;
    osp_mailbox_list_t from, to;
};

static void clause_free(struct clause *c)
{
    if (c == NULL)
        return;
    free(c->hname);
    free(c->str);
    pcre2_code_free(c->re);
    osp_cidrset_free(&c->nets);
    free(c);
}

static void node_free(struct node *n)
{
    size_t i;

    if (n == NULL)
        return;
    for (i = 0; i < n->n_kids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    clause_free(n->cl);
    free(n);
}

void osp_rules_free(osp_rules_t **rulesp)
{
    osp_rules_t *rs = *rulesp;
    size_t i;

    if (rs == NULL)
        return;
    for (i = 0; i < rs->n_rules; i++) {
        free(rs->rules[i].name);
        free(rs->rules[i].desc);
        node_free(rs->rules[i].expr);
    }
    for (i = 0; i < rs->n_disabled; i++)
        free(rs->disabled[i]);
    free(rs->disabled);
    free(rs->rules);
    free(rs->names);
    pcre2_match_context_free(rs->mctx);
    free(rs);
    *rulesp = NULL;
}

size_t osp_rules_count(const osp_rules_t *rules)
{
    return rules->n_rules;
}

const char *osp_rules_name(const osp_rules_t *rules, size_t i)
{
    return i < rules->n_rules ? rules->rules[i].name : NULL;
}

/* ---- Lexer ------------------------------------------------------------ */

enum tok_kind {
    T_EOF, T_IDENT, T_STRING, T_NUMBER, T_REGEX, T_LPAREN, T_RPAREN,
    T_LBRACK, T_RBRACK, T_COMMA, T_COLON, T_ARROW, T_LT, T_GT, T_LE, T_GE,
    T_ERROR,
};

struct token {
    enum tok_kind kind;
    size_t line, col;
    size_t start, len;          /* in the source */
    osp_buf_t val;              /* decoded string, regex pattern or name */
    double num;
    uint32_t reflags;
};

struct parser {
    const char *src;
    size_t len, pos, line, linestart;
    const char *filename;
    osp_buf_t *errors;
    size_t n_errors;
    bool quiet;                 /* resynchronising: no lexer errors */
    bool bad;                   /* the current statement had an error */
    unsigned depth;
    struct token tok;
    osp_rules_t *rs;
};

static void verror_at(struct parser *p, size_t line, size_t col, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void verror_at(struct parser *p, size_t line, size_t col, const char *fmt, va_list ap)
{
    p->n_errors++;
    p->bad = true;
    if (p->errors == NULL)
        return;
    (void)osp_buf_printf(p->errors, "%s:%zu:%zu: ", p->filename, line, col);
    (void)osp_buf_vprintf(p->errors, fmt, ap);
    (void)osp_buf_append_char(p->errors, '\n');
}

static void error_at(struct parser *p, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void error_at(struct parser *p, size_t line, size_t col, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror_at(p, line, col, fmt, ap);
    va_end(ap);
}

static void error_tok(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void error_tok(struct parser *p, const char *fmt, ...)
{
    va_list ap;

    /* A bad token was reported by the lexer already. */
    if (p->tok.kind == T_ERROR) {
        p->bad = true;
        return;
    }
    va_start(ap, fmt);
    verror_at(p, p->tok.line, p->tok.col, fmt, ap);
    va_end(ap);
}

/* The current token as written, for "got ..." (a static buffer per parser call). */
static const char *tok_text(struct parser *p, char *buf, size_t size)
{
    osp_buf_t b;
    size_t n = p->tok.len;

    if (p->tok.kind == T_EOF)
        return "end of file";
    bool quote = p->tok.kind != T_STRING;

    osp_buf_init(&b, size > 8 ? size - 8 : 0);
    if (n > 40)
        n = 40;
    if (quote)
        (void)osp_buf_append_char(&b, '"');
    (void)osp_buf_append_printable(&b, p->src + p->tok.start, n);
    if (n < p->tok.len)
        (void)osp_buf_append_str(&b, "...");
    if (quote)
        (void)osp_buf_append_char(&b, '"');
    osp_strlcpy(buf, osp_buf_cstr(&b), size);
    osp_buf_close(&b);
    return buf;
}

static bool is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '.';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static void lex_error(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void lex_error(struct parser *p, const char *fmt, ...)
{
    va_list ap;

    p->tok.kind = T_ERROR;
    if (p->quiet)
        return;
    va_start(ap, fmt);
    verror_at(p, p->tok.line, p->tok.col, fmt, ap);
    va_end(ap);
}

static void lex_string(struct parser *p)
{
    const char *s = p->src;

    p->pos++;
    for (;;) {
        if (p->pos >= p->len || s[p->pos] == '\n') {
            lex_error(p, "unterminated string");
            return;
        }
        if (s[p->pos] == '"') {
            p->pos++;
            return;
        }
        if (s[p->pos] == '\\' && p->pos + 1 < p->len && s[p->pos + 1] != '\n') {
            char c = s[p->pos + 1];

            p->pos += 2;
            if (c == 'n')
                c = '\n';
            else if (c == 't')
                c = '\t';
            else if (c != '"' && c != '\\')
                (void)osp_buf_append_char(&p->tok.val, '\\');
            (void)osp_buf_append_char(&p->tok.val, c);
            continue;
        }
        (void)osp_buf_append_char(&p->tok.val, s[p->pos++]);
    }
}

static void lex_regex(struct parser *p)
{
    const char *s = p->src;

    p->pos++;
    for (;;) {
        if (p->pos >= p->len || s[p->pos] == '\n') {
            lex_error(p, "unterminated regular expression (missing closing \"/\")");
            return;
        }
        if (s[p->pos] == '/')
            break;
        if (s[p->pos] == '\\' && p->pos + 1 < p->len && s[p->pos + 1] != '\n') {
            /* Keep the escape for PCRE2, which reads "\/" as "/". */
            (void)osp_buf_append(&p->tok.val, s + p->pos, 2);
            p->pos += 2;
            continue;
        }
        (void)osp_buf_append_char(&p->tok.val, s[p->pos++]);
    }
    p->pos++;
    while (p->pos < p->len && is_ident_char((unsigned char)s[p->pos])) {
        char c = s[p->pos];

        if (c == 'i')
            p->tok.reflags |= PCRE2_CASELESS;
        else if (c == 'm')
            p->tok.reflags |= PCRE2_MULTILINE;
        else if (c == 's')
            p->tok.reflags |= PCRE2_DOTALL;
        else if (c == 'x')
            p->tok.reflags |= PCRE2_EXTENDED;
        else {
            p->tok.line = p->line;
            p->tok.col = p->pos - p->linestart + 1;
            lex_error(p, "unknown regular expression flag \"%c\" (use i, m, s or x)", c);
            p->pos++;
            return;
        }
        p->pos++;
    }
}

static void lex_number(struct parser *p)
{
    const char *s = p->src;
    size_t st = p->pos;
    char buf[64];
    size_t n;
    double mult = 1;

    if (s[p->pos] == '-' || s[p->pos] == '+')
        p->pos++;
    if (p->pos >= p->len || !is_digit((unsigned char)s[p->pos])) {
        lex_error(p, "expected a digit after \"%c\"", s[st]);
        return;
    }
    while (p->pos < p->len && is_digit((unsigned char)s[p->pos]))
        p->pos++;
    if (p->pos + 1 < p->len && s[p->pos] == '.' && is_digit((unsigned char)s[p->pos + 1])) {
        p->pos++;
        while (p->pos < p->len && is_digit((unsigned char)s[p->pos]))
            p->pos++;
    }
    n = p->pos - st;
    if (p->pos < p->len) {
        int c = lower((unsigned char)s[p->pos]);

        if (c == 'k' || c == 'm' || c == 'g') {
            mult = c == 'k' ? 1024.0 : c == 'm' ? 1048576.0 : 1073741824.0;
            p->pos++;
        }
    }
    if (p->pos < p->len && is_ident_char((unsigned char)s[p->pos])) {
        while (p->pos < p->len && is_ident_char((unsigned char)s[p->pos]))
            p->pos++;
        p->tok.len = p->pos - p->tok.start;
        lex_error(p, "malformed number \"%.*s\"", (int)p->tok.len, s + p->tok.start);
        return;
    }
    if (n >= sizeof(buf)) {
        lex_error(p, "number too long");
        return;
    }
    memcpy(buf, s + st, n);
    buf[n] = '\0';
    p->tok.num = strtod(buf, NULL) * mult;
}

/* Read the next token into p->tok. */
static void next(struct parser *p)
{
    const char *s = p->src;

    osp_buf_reset(&p->tok.val);
    p->tok.reflags = 0;
    p->tok.num = 0;
    for (;;) {
        while (p->pos < p->len && (s[p->pos] == ' ' || s[p->pos] == '\t'
                                   || s[p->pos] == '\r' || s[p->pos] == '\n')) {
            if (s[p->pos] == '\n') {
                p->line++;
                p->linestart = p->pos + 1;
            }
            p->pos++;
        }
        if (p->pos < p->len && s[p->pos] == '#') {
            while (p->pos < p->len && s[p->pos] != '\n')
                p->pos++;
            continue;
        }
        break;
    }
    p->tok.line = p->line;
    p->tok.col = p->pos - p->linestart + 1;
    p->tok.start = p->pos;
    if (p->pos >= p->len) {
        p->tok.kind = T_EOF;
        p->tok.len = 0;
        return;
    }
    unsigned char c = (unsigned char)s[p->pos];

    if (is_ident_start(c)) {
        p->tok.kind = T_IDENT;
        while (p->pos < p->len && is_ident_char((unsigned char)s[p->pos]))
            p->pos++;
        (void)osp_buf_append(&p->tok.val, s + p->tok.start, p->pos - p->tok.start);
    } else if (is_digit(c) || ((c == '-' || c == '+') && p->pos + 1 < p->len
                               && is_digit((unsigned char)s[p->pos + 1]))) {
        p->tok.kind = T_NUMBER;
        lex_number(p);
    } else if (c == '"') {
        p->tok.kind = T_STRING;
        lex_string(p);
    } else if (c == '/') {
        p->tok.kind = T_REGEX;
        lex_regex(p);
    } else if (c == '=' && p->pos + 1 < p->len && s[p->pos + 1] == '>') {
        p->tok.kind = T_ARROW;
        p->pos += 2;
    } else if ((c == '<' || c == '>') && p->pos + 1 < p->len && s[p->pos + 1] == '=') {
        p->tok.kind = c == '<' ? T_LE : T_GE;
        p->pos += 2;
    } else {
        p->pos++;
        switch (c) {
        case '(': p->tok.kind = T_LPAREN; break;
        case ')': p->tok.kind = T_RPAREN; break;
        case '[': p->tok.kind = T_LBRACK; break;
        case ']': p->tok.kind = T_RBRACK; break;
        case ',': p->tok.kind = T_COMMA; break;
        case ':': p->tok.kind = T_COLON; break;
        case '<': p->tok.kind = T_LT; break;
        case '>': p->tok.kind = T_GT; break;
        default:
            p->tok.len = 1;
            if (c >= 0x20 && c < 0x7f)
                lex_error(p, "unexpected character \"%c\"", c);
            else
                lex_error(p, "unexpected byte \\x%02X", c);
            return;
        }
    }
    p->tok.len = p->pos - p->tok.start;
}

static bool tok_is(const struct parser *p, const char *word)
{
    return p->tok.kind == T_IDENT && strcmp(osp_buf_cstr(&p->tok.val), word) == 0;
}

/* ---- Suggestions ------------------------------------------------------ */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, j;
    size_t row[64];

    if (la >= 63 || lb >= 63)
        return (size_t)-1;
    for (j = 0; j <= lb; j++)
        row[j] = j;
    for (i = 1; i <= la; i++) {
        size_t prev = row[0];

        row[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t best = prev + (lower((unsigned char)a[i - 1]) != lower((unsigned char)b[j - 1]));

            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The nearest of names[] to word if close enough, else NULL. */
static const char *nearest(const char *word, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bestd = (size_t)-1, i, lim = strlen(word) / 3;

    if (lim < 2)
        lim = 2;
    for (i = 0; i < n; i++) {
        size_t d = edit_distance(word, names[i]);

        if (d < bestd) {
            bestd = d;
            best = names[i];
        }
    }
    return bestd <= lim ? best : NULL;
}

/* ---- Parser ----------------------------------------------------------- */

static struct node *node_new(enum node_kind kind)
{
    struct node *n = osp_calloc(1, sizeof(*n));

    n->kind = kind;
    return n;
}

static void node_add(struct node *n, struct node *kid)
{
    n->kids = osp_reallocarray(n->kids, n->n_kids + 1, sizeof(*n->kids));
    n->kids[n->n_kids++] = kid;
}

static struct node *parse_expr(struct parser *p);

static const struct field_def *field_lookup(const char *name)
{
    size_t i;

    for (i = 0; i < N_FIELDS; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

static const char *field_type_name(const struct field_def *f)
{
    switch (f->type) {
    case FT_NUM: return "number";
    case FT_IP: return "address";
    case FT_ANOMALY: return "anomaly";
    default: return "text";
    }
}

#define RELATION_LIST "(is, is not, contains, matches, in, not in, <, >, <=, >=, exists)"

/* Parse a relation at the current token; -1 if there is none. */
static int parse_relation(struct parser *p, bool *neg)
{
    switch (p->tok.kind) {
    case T_LT: next(p); return R_LT;
    case T_GT: next(p); return R_GT;
    case T_LE: next(p); return R_LE;
    case T_GE: next(p); return R_GE;
    case T_IDENT: break;
    default: return -1;
    }
    if (tok_is(p, "is")) {
        next(p);
        if (tok_is(p, "not")) {
            *neg = !*neg;
            next(p);
        }
        return R_IS;
    }
    if (tok_is(p, "contains")) { next(p); return R_CONTAINS; }
    if (tok_is(p, "matches")) { next(p); return R_MATCHES; }
    if (tok_is(p, "in")) { next(p); return R_IN; }
    if (tok_is(p, "exists")) { next(p); return R_EXISTS; }
    return -1;
}

static void compile_regex(struct parser *p, struct clause *c, const char *pat, size_t patlen,
                          uint32_t flags, size_t line, size_t col, bool literal)
{
    int errcode;
    PCRE2_SIZE off;
    PCRE2_UCHAR msg[256];

    c->re = pcre2_compile((PCRE2_SPTR)pat, patlen,
                          flags | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &errcode, &off, NULL);
    if (c->re == NULL) {
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        error_at(p, line, literal ? col + 1 + off : col,
                 "bad regular expression: %s at offset %zu", (const char *)msg, (size_t)off);
        return;
    }
    /*
     * Without JIT (unsupported platform) the interpreter is used.  JIT
     * code reads whole words near the end of the subject on purpose,
     * which valgrind reports as uninitialised reads: skip it there.
     */
    if (!RUNNING_ON_VALGRIND)
        (void)pcre2_jit_compile(c->re, PCRE2_JIT_COMPLETE);
}

static void add_networks(struct parser *p, struct clause *c, const char *list)
{
    const char *s = list;

    if (c->nets == NULL)
        c->nets = osp_cidrset_create();
    for (;;) {
        char item[128], err[256];
        size_t n;
        osp_cidr_t net;

        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (*s == '\0')
            break;
        n = strcspn(s, " \t,");
        if (n >= sizeof(item)) {
            error_tok(p, "network too long");
            return;
        }
        memcpy(item, s, n);
        item[n] = '\0';
        s += n;
        if (osp_cidr_parse(item, &net, err, sizeof(err)) < 0) {
            error_tok(p, "%s", err);
            continue;
        }
        (void)osp_cidrset_add(c->nets, &net, 1);
    }
}

/* The value after relation rel; the token is the first token of the value. */
static bool parse_value(struct parser *p, struct clause *c, const char *relname)
{
    const struct field_def *f = c->f;
    char got[64];

    switch (c->rel) {
    case R_EXISTS:
        return true;
    case R_IN:
        if (p->tok.kind == T_STRING) {
            add_networks(p, c, osp_buf_cstr(&p->tok.val));
            next(p);
            return true;
        }
        if (p->tok.kind == T_LBRACK) {
            next(p);
            for (;;) {
                if (p->tok.kind != T_STRING) {
                    error_tok(p, "expected a network in quotes, got %s",
                              tok_text(p, got, sizeof(got)));
                    return false;
                }
                add_networks(p, c, osp_buf_cstr(&p->tok.val));
                next(p);
                if (p->tok.kind == T_RBRACK)
                    break;
                if (p->tok.kind != T_COMMA) {
                    error_tok(p, "expected \",\" or \"]\" in a network list, got %s",
                              tok_text(p, got, sizeof(got)));
                    return false;
                }
                next(p);
            }
            next(p);
            return true;
        }
        error_tok(p, "expected a network (\"192.0.2.0/24\" or [\"...\", ...]) after \"in\", got %s",
                  tok_text(p, got, sizeof(got)));
        return false;
    case R_LT: case R_GT: case R_LE: case R_GE:
        if (p->tok.kind != T_NUMBER) {
            error_tok(p, "expected a number after \"%s\", got %s", relname,
                      tok_text(p, got, sizeof(got)));
            return false;
        }
        c->num = p->tok.num;
        next(p);
        return true;
    case R_MATCHES:
        if (p->tok.kind == T_REGEX || p->tok.kind == T_STRING) {
            compile_regex(p, c, osp_buf_cstr(&p->tok.val), p->tok.val.len, p->tok.reflags,
                          p->tok.line, p->tok.col, p->tok.kind == T_REGEX);
            next(p);
            return true;
        }
        error_tok(p, "expected a regular expression (/.../) after \"matches\", got %s",
                  tok_text(p, got, sizeof(got)));
        return false;
    case R_IS:
        if (f != NULL && f->type == FT_NUM) {
            if (p->tok.kind != T_NUMBER) {
                error_tok(p, "expected a number after \"is\", got %s",
                          tok_text(p, got, sizeof(got)));
                return false;
            }
            c->num = p->tok.num;
            next(p);
            return true;
        }
        /* fall through */
    case R_CONTAINS:
        if (p->tok.kind == T_STRING || (f == NULL && p->tok.kind == T_NUMBER)) {
            size_t i;

            c->str = osp_memdup0(p->tok.val.data ? p->tok.val.data : "", p->tok.val.len);
            c->slen = p->tok.val.len;
            for (i = 0; i < c->slen; i++)
                c->str[i] = (char)lower((unsigned char)c->str[i]);
            if (f != NULL && f->type == FT_ANOMALY) {
                c->abit = osp_mime_anomaly_from_name(c->str);
                if (c->abit == 0) {
                    const char *names[OSP_MIME_A_COUNT], *near;
                    size_t i2;

                    for (i2 = 0; i2 < OSP_MIME_A_COUNT; i2++)
                        names[i2] = osp_mime_anomaly_name(UINT64_C(1) << i2);
                    near = nearest(c->str, names, OSP_MIME_A_COUNT);
                    if (near != NULL)
                        error_tok(p, "unknown anomaly \"%s\", did you mean \"%s\"?", c->str, near);
                    else
                        error_tok(p, "unknown anomaly \"%s\" (see osprey-rules(5))", c->str);
                }
            }
            next(p);
            return true;
        }
        error_tok(p, "expected a string in quotes after \"%s\", got %s", relname,
                  tok_text(p, got, sizeof(got)));
        return false;
    }
    return false;
}

/* Does the relation apply to the field's type?  Reports and returns false if not. */
static void check_types(struct parser *p, const struct clause *c, size_t line, size_t col)
{
    const struct field_def *f = c->f;
    const char *fname = f->name;

    switch (c->rel) {
    case R_EXISTS:
        return;
    case R_IN:
        if (f->type != FT_IP)
            error_at(p, line, col, "relation \"in\" applies to address fields (client.address, "
                     "url.host); \"%s\" is a %s field", fname, field_type_name(f));
        return;
    case R_LT: case R_GT: case R_LE: case R_GE:
        if (f->type != FT_NUM)
            error_at(p, line, col, "relation \"%s\" applies to number fields; \"%s\" is a %s field",
                     rel_names[c->rel], fname, field_type_name(f));
        return;
    case R_CONTAINS: case R_MATCHES:
        if (f->type == FT_NUM)
            error_at(p, line, col, "relation \"%s\" does not apply to the number field \"%s\" "
                     "(use is, <, >, <=, >=, exists)", rel_names[c->rel], fname);
        return;
    case R_IS:
        return;
    }
}

static struct node *parse_clause(struct parser *p)
{
    struct clause *c = osp_calloc(1, sizeof(*c));
    struct node *n;
    char got[64], fname[80];
    size_t rline, rcol;
    int rel;
    bool neg = false;
    const char *relname;

    if (p->tok.kind != T_IDENT) {
        error_tok(p, "expected a field name, \"not\" or \"(\", got %s", tok_text(p, got, sizeof(got)));
        clause_free(c);
        return NULL;
    }
    osp_strlcpy(fname, osp_buf_cstr(&p->tok.val), sizeof(fname));
    c->f = field_lookup(fname);
    if (c->f == NULL) {
        const char *names[N_FIELDS], *near;
        size_t i;

        for (i = 0; i < N_FIELDS; i++)
            names[i] = fields[i].name;
        near = nearest(fname, names, N_FIELDS);
        if (near != NULL)
            error_tok(p, "unknown field \"%s\", did you mean \"%s\"?", fname, near);
        else
            error_tok(p, "unknown field \"%s\"", fname);
    }
    next(p);
    if (c->f != NULL && c->f->id == F_HEADER) {
        if (p->tok.kind != T_STRING || p->tok.val.len == 0) {
            error_tok(p, "expected a header field name in quotes after \"header\", got %s",
                      tok_text(p, got, sizeof(got)));
            clause_free(c);
            return NULL;
        }
        c->hname = osp_strdup(osp_buf_cstr(&p->tok.val));
        osp_snprintf(fname, sizeof(fname), "header \"%s\"", c->hname);
        next(p);
    }
    rline = p->tok.line;
    rcol = p->tok.col;
    if (tok_is(p, "not")) {
        neg = true;
        next(p);
    }
    rel = parse_relation(p, &neg);
    if (rel < 0) {
        if (neg)
            error_tok(p, "expected a relation " RELATION_LIST " after \"not\", got %s",
                      tok_text(p, got, sizeof(got)));
        else if (c->hname != NULL)
            error_tok(p, "expected a relation " RELATION_LIST " after %s, got %s",
                      fname, tok_text(p, got, sizeof(got)));
        else
            error_tok(p, "expected a relation " RELATION_LIST " after field \"%s\", got %s",
                      fname, tok_text(p, got, sizeof(got)));
        clause_free(c);
        return NULL;
    }
    c->rel = (enum rel)rel;
    c->neg = neg;
    relname = rel_names[rel];
    if (!parse_value(p, c, relname)) {
        clause_free(c);
        return NULL;
    }
    if (c->f != NULL)
        check_types(p, c, rline, rcol);
    n = node_new(N_CLAUSE);
    n->cl = c;
    return n;
}

static struct node *parse_unary(struct parser *p)
{
    struct node *n, *kid;
    char got[64];

    if (tok_is(p, "not")) {
        next(p);
        if (++p->depth > MAX_NESTING) {
            error_tok(p, "expression nested too deeply");
            return NULL;
        }
        kid = parse_unary(p);
        p->depth--;
        if (kid == NULL)
            return NULL;
        n = node_new(N_NOT);
        node_add(n, kid);
        return n;
    }
    if (p->tok.kind == T_LPAREN) {
        size_t line = p->tok.line, col = p->tok.col;

        next(p);
        if (++p->depth > MAX_NESTING) {
            error_tok(p, "expression nested too deeply");
            return NULL;
        }
        n = parse_expr(p);
        p->depth--;
        if (n == NULL)
            return NULL;
        if (p->tok.kind != T_RPAREN) {
            error_tok(p, "expected \")\" to close the \"(\" at %zu:%zu, got %s", line, col,
                      tok_text(p, got, sizeof(got)));
            node_free(n);
            return NULL;
        }
        next(p);
        return n;
    }
    return parse_clause(p);
}

static struct node *parse_group(struct parser *p)
{
    struct node *first = parse_unary(p), *n;

    if (first == NULL || !tok_is(p, "and"))
        return first;
    n = node_new(N_AND);
    node_add(n, first);
    while (tok_is(p, "and")) {
        struct node *kid;

        next(p);
        kid = parse_unary(p);
        if (kid == NULL) {
            node_free(n);
            return NULL;
        }
        node_add(n, kid);
    }
    return n;
}

static struct node *parse_expr(struct parser *p)
{
    struct node *first = parse_group(p), *n;

    if (first == NULL || !tok_is(p, "or"))
        return first;
    n = node_new(N_OR);
    node_add(n, first);
    while (tok_is(p, "or")) {
        struct node *kid;

        next(p);
        kid = parse_group(p);
        if (kid == NULL) {
            node_free(n);
            return NULL;
        }
        node_add(n, kid);
    }
    return n;
}

/*
 * Flatten nested groups of the same kind, compute costs and order the
 * operands of every group cheapest first (stable).
 */
static void optimize(struct node *n)
{
    size_t i, j;

    switch (n->kind) {
    case N_CLAUSE: {
        const struct clause *c = n->cl;
        unsigned cost = c->f != NULL ? c->f->cost : 1;

        if (c->rel == R_MATCHES)
            cost = cost * 4 + 2;
        else if (c->rel == R_CONTAINS)
            cost = cost * 2;
        n->cost = cost;
        return;
    }
    case N_NOT:
        optimize(n->kids[0]);
        n->cost = n->kids[0]->cost;
        return;
    case N_AND:
    case N_OR:
        break;
    }
    for (i = 0; i < n->n_kids; i++) {
        struct node *k = n->kids[i];

        optimize(k);
        if (k->kind == n->kind) {
            /* Splice k's operands in place of k. */
            size_t m = k->n_kids;

            n->kids = osp_reallocarray(n->kids, n->n_kids + m - 1, sizeof(*n->kids));
            memmove(n->kids + i + m, n->kids + i + 1, (n->n_kids - i - 1) * sizeof(*n->kids));
            memcpy(n->kids + i, k->kids, m * sizeof(*n->kids));
            n->n_kids += m - 1;
            free(k->kids);
            free(k);
            i += m - 1;
        }
    }
    n->cost = 0;
    for (i = 1; i < n->n_kids; i++) {
        struct node *k = n->kids[i];

        for (j = i; j > 0 && n->kids[j - 1]->cost > k->cost; j--)
            n->kids[j] = n->kids[j - 1];
        n->kids[j] = k;
    }
    for (i = 0; i < n->n_kids; i++)
        n->cost += n->kids[i]->cost;
}

static const struct rule *find_rule(const osp_rules_t *rs, const char *name)
{
    size_t i;

    for (i = 0; i < rs->n_rules; i++)
        if (strcmp(rs->rules[i].name, name) == 0)
            return &rs->rules[i];
    return NULL;
}

static bool at_statement(const struct parser *p)
{
    return p->tok.kind == T_EOF || tok_is(p, "rule") || tok_is(p, "disable");
}

static void resync(struct parser *p)
{
    p->quiet = true;
    while (!at_statement(p))
        next(p);
    p->quiet = false;
}

static void parse_outcome(struct parser *p, struct rule *r)
{
    char got[64];
    bool any = false, have_score = false, have_action = false;

    for (;;) {
        if (tok_is(p, "score") && !have_score) {
            next(p);
            if (p->tok.kind != T_NUMBER) {
                error_tok(p, "expected a number after \"score\", got %s",
                          tok_text(p, got, sizeof(got)));
                return;
            }
            r->score = p->tok.num;
            have_score = any = true;
            next(p);
        } else if (tok_is(p, "action") && !have_action) {
            size_t i;
            const char *near;

            next(p);
            if (p->tok.kind != T_IDENT) {
                error_tok(p, "expected an action (deliver, tag, discard, quarantine, reject) "
                          "after \"action\", got %s", tok_text(p, got, sizeof(got)));
                return;
            }
            for (i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
                if (strcmp(action_names[i], osp_buf_cstr(&p->tok.val)) == 0)
                    break;
            if (i == sizeof(action_names) / sizeof(action_names[0])) {
                near = nearest(osp_buf_cstr(&p->tok.val), action_names,
                               sizeof(action_names) / sizeof(action_names[0]));
                error_tok(p, "unknown action %s (deliver, tag, discard, quarantine, reject)%s%s%s",
                          tok_text(p, got, sizeof(got)), near ? ", did you mean \"" : "",
                          near ? near : "", near ? "\"?" : "");
            }
            r->action = (enum osp_rules_action)i;
            have_action = any = true;
            next(p);
        } else {
            break;
        }
    }
    if (!any) {
        error_tok(p, "expected \"score\" or \"action\" after \"=>\", got %s",
                  tok_text(p, got, sizeof(got)));
        return;
    }
    if (p->tok.kind == T_STRING) {
        r->desc = osp_strdup(osp_buf_cstr(&p->tok.val));
        next(p);
    }
    if (!at_statement(p))
        error_tok(p, "expected \"rule\", \"disable\" or end of file after rule \"%s\", got %s",
                  r->name, tok_text(p, got, sizeof(got)));
}

static void parse_rule(struct parser *p)
{
    struct rule r;
    char got[64];
    const struct rule *dup;

    memset(&r, 0, sizeof(r));
    r.line = p->tok.line;
    next(p);
    if (p->tok.kind != T_IDENT) {
        error_tok(p, "expected a rule name after \"rule\", got %s", tok_text(p, got, sizeof(got)));
        return;
    }
    r.name = osp_strdup(osp_buf_cstr(&p->tok.val));
    if ((dup = find_rule(p->rs, r.name)) != NULL)
        error_tok(p, "rule \"%s\" already defined at line %zu", r.name, dup->line);
    next(p);
    if (p->tok.kind != T_COLON) {
        error_tok(p, "expected \":\" after rule name \"%s\", got %s", r.name,
                  tok_text(p, got, sizeof(got)));
        goto fail;
    }
    next(p);
    r.expr = parse_expr(p);
    if (r.expr == NULL)
        goto fail;
    if (p->tok.kind != T_ARROW) {
        error_tok(p, "expected \"and\", \"or\" or \"=>\" after a clause, got %s",
                  tok_text(p, got, sizeof(got)));
        goto fail;
    }
    next(p);
    parse_outcome(p, &r);
    if (p->bad)
        goto fail;
    if (r.desc == NULL)
        r.desc = osp_strdup(r.name);
    optimize(r.expr);
    if (p->rs->n_rules == p->rs->rules_alloc) {
        p->rs->rules_alloc = p->rs->rules_alloc ? p->rs->rules_alloc * 2 : 16;
        p->rs->rules = osp_reallocarray(p->rs->rules, p->rs->rules_alloc, sizeof(*p->rs->rules));
    }
    p->rs->rules[p->rs->n_rules++] = r;
    return;
fail:
    free(r.name);
    free(r.desc);
    node_free(r.expr);
}

static void parse_disable(struct parser *p)
{
    char got[64];
    osp_rules_t *rs = p->rs;

    next(p);
    if (p->tok.kind != T_IDENT) {
        error_tok(p, "expected a rule name after \"disable\", got %s", tok_text(p, got, sizeof(got)));
        return;
    }
    if (rs->n_disabled == rs->disabled_alloc) {
        rs->disabled_alloc = rs->disabled_alloc ? rs->disabled_alloc * 2 : 8;
        rs->disabled = osp_reallocarray(rs->disabled, rs->disabled_alloc, sizeof(*rs->disabled));
    }
    rs->disabled[rs->n_disabled++] = osp_strdup(osp_buf_cstr(&p->tok.val));
    next(p);
    if (!at_statement(p))
        error_tok(p, "expected \"rule\", \"disable\" or end of file, got %s",
                  tok_text(p, got, sizeof(got)));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

osp_rules_t *osp_rules_compile(const char *src, size_t len, const char *filename,
                               const osp_rules_options_t *opts,
                               osp_buf_t *errors, size_t *n_errors_r)
{
    struct parser p;
    osp_rules_t *rs = osp_calloc(1, sizeof(*rs));
    char got[64];
    size_t i;

    memset(&p, 0, sizeof(p));
    p.src = src;
    p.len = len;
    p.line = 1;
    p.filename = filename != NULL ? filename : "rules";
    p.errors = errors;
    p.rs = rs;
    osp_buf_init(&p.tok.val, OSP_BUF_UNLIMITED);
    next(&p);
    while (p.tok.kind != T_EOF) {
        p.bad = false;
        if (tok_is(&p, "rule")) {
            parse_rule(&p);
        } else if (tok_is(&p, "disable")) {
            parse_disable(&p);
        } else if (p.tok.kind != T_ERROR) {
            error_tok(&p, "expected \"rule\" or \"disable\", got %s", tok_text(&p, got, sizeof(got)));
        }
        if (p.bad || p.tok.kind == T_ERROR) {
            if (p.tok.kind == T_ERROR || !at_statement(&p))
                next(&p);
            resync(&p);
        }
    }
    osp_buf_close(&p.tok.val);
    if (n_errors_r != NULL)
        *n_errors_r = p.n_errors;
    if (p.n_errors > 0) {
        osp_rules_free(&rs);
        return NULL;
    }
    rs->names = osp_reallocarray(NULL, rs->n_rules + 1, sizeof(*rs->names));
    for (i = 0; i < rs->n_rules; i++)
        rs->names[i] = rs->rules[i].name;
    qsort(rs->names, rs->n_rules, sizeof(*rs->names), cmp_str);
    if (rs->n_disabled > 0)
        qsort(rs->disabled, rs->n_disabled, sizeof(*rs->disabled), cmp_str);
    rs->mctx = pcre2_match_context_create(NULL);
    if (rs->mctx == NULL)
        osp_panic("pcre2_match_context_create: out of memory");
    pcre2_set_match_limit(rs->mctx, opts != NULL && opts->match_limit ? opts->match_limit
                                                                     : DEFAULT_MATCH_LIMIT);
    pcre2_set_depth_limit(rs->mctx, opts != NULL && opts->depth_limit ? opts->depth_limit
                                                                     : DEFAULT_DEPTH_LIMIT);
    pcre2_set_heap_limit(rs->mctx, HEAP_LIMIT_KIB);
    return rs;
}

osp_rules_t *osp_rules_load_file(const char *path, const osp_rules_options_t *opts,
                                 osp_buf_t *errors, size_t *n_errors_r)
{
    FILE *f = fopen(path, "rb");
    osp_buf_t b;
    char chunk[8192];
    size_t n;
    osp_rules_t *rs;
    int saved;

    if (f == NULL) {
        saved = errno;
        if (errors != NULL)
            (void)osp_buf_printf(errors, "%s: cannot read: %s\n", path, strerror(saved));
        if (n_errors_r != NULL)
            *n_errors_r = 1;
        return NULL;
    }
    osp_buf_init(&b, MAX_FILE_SIZE);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (osp_buf_append(&b, chunk, n) < 0) {
            fclose(f);
            osp_buf_close(&b);
            if (errors != NULL)
                (void)osp_buf_printf(errors, "%s: cannot read: file larger than %u bytes\n",
                                     path, MAX_FILE_SIZE);
            if (n_errors_r != NULL)
                *n_errors_r = 1;
            return NULL;
        }
    }
    if (ferror(f)) {
        saved = errno;
        fclose(f);
        osp_buf_close(&b);
        if (errors != NULL)
            (void)osp_buf_printf(errors, "%s: cannot read: %s\n", path, strerror(saved));
        if (n_errors_r != NULL)
            *n_errors_r = 1;
        return NULL;
    }
    fclose(f);
    rs = osp_rules_compile(osp_buf_cstr(&b), b.len, path, opts, errors, n_errors_r);
    osp_buf_close(&b);
    return rs;
}

/* ---- Evaluation input helpers ----------------------------------------- */

void osp_rules_ctx_init(osp_rules_ctx_t *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->bayes = -1;
}

void osp_rules_result_init(osp_rules_result_t *r)
{
    memset(r, 0, sizeof(*r));
}

void osp_rules_result_close(osp_rules_result_t *r)
{
    free(r->hits);
    memset(r, 0, sizeof(*r));
}

void osp_rules_result_reset(osp_rules_result_t *r)
{
    r->score = 0;
    r->action = OSP_RULES_DELIVER;
    r->n_hits = 0;
    r->n_errors = 0;
    r->error_rule = NULL;
}

osp_rules_scratch_t *osp_rules_scratch_create(void)
{
    osp_rules_scratch_t *s = osp_calloc(1, sizeof(*s));

    s->md = pcre2_match_data_create(1, NULL);
    if (s->md == NULL)
        osp_panic("pcre2_match_data_create: out of memory");
    osp_mailbox_list_init(&s->from);
    osp_mailbox_list_init(&s->to);
    return s;
}

void osp_rules_scratch_free(osp_rules_scratch_t **sp)
{
    osp_rules_scratch_t *s = *sp;

    if (s == NULL)
        return;
    pcre2_match_data_free(s->md);
    osp_mailbox_list_close(&s->from);
    osp_mailbox_list_close(&s->to);
    free(s);
    *sp = NULL;
}

/* ---- Mailbox lists (From, To) ------------------------------------------ */

static const osp_mailbox_list_t *mboxes(osp_rules_scratch_t *sc, bool to)
{
    osp_mailbox_list_t *l = to ? &sc->to : &sc->from;
    bool *have = to ? &sc->have_to : &sc->have_from;
    const osp_mime_message_t *m = sc->ctx->msg;
    const char *v;
    size_t i;

    if (*have)
        return l;
    *have = true;
    osp_mailbox_list_reset(l);
    for (i = 0; (v = osp_mime_header_get(m, to ? "To" : "From", i)) != NULL; i++)
        osp_mailbox_parse(l, v);
    return l;
}

/* ---- Evaluation ------------------------------------------------------- */

struct eval {
    const osp_rules_t *rs;
    const osp_rules_ctx_t *ctx;
    osp_rules_scratch_t *sc;
    bool error;
};

static bool ci_equal(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)b[i])
            return false;
    return true;
}

/* Does h contain the lower-case needle n, ignoring ASCII case? */
static bool ci_contains(const char *h, size_t hl, const char *n, size_t nl)
{
    size_t i;
    int f;

    if (nl == 0)
        return true;
    if (nl > hl)
        return false;
    f = (unsigned char)n[0];
    for (i = 0; i + nl <= hl; i++)
        if (lower((unsigned char)h[i]) == f && ci_equal(h + i + 1, n + 1, nl - 1))
            return true;
    return false;
}

/* 1 if the value satisfies the (positive) relation, 0 if not, -1 on error. */
static int test_value(struct eval *ev, const struct clause *c, const char *s, size_t len)
{
    switch (c->rel) {
    case R_EXISTS:
        return 1;
    case R_IS:
        return len == c->slen && ci_equal(s, c->str, len);
    case R_CONTAINS:
        return ci_contains(s, len, c->str, c->slen);
    case R_MATCHES: {
        int rc;

        if (c->re == NULL)
            return 0;
        rc = pcre2_match(c->re, (PCRE2_SPTR)s, len, 0, 0, ev->sc->md, ev->rs->mctx);
        if (rc >= 0)
            return 1;
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        return -1;
    }
    case R_IN: {
        char buf[OSP_IP_STRLEN + 8];
        osp_ip_t ip;

        if (len >= sizeof(buf))
            return 0;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return osp_ip_parse(buf, &ip) == 0
               && osp_cidrset_lookup(c->nets, &ip, NULL, NULL) == OSP_CIDRSET_FOUND;
    }
    default:
        return 0;
    }
}

/*
 * Visit the values of a text or address field until one satisfies the
 * relation: 1 if one did, 0 if none.  Errors set ev->error.
 */
static int any_value(struct eval *ev, const struct clause *c)
{
    const osp_rules_ctx_t *ctx = ev->ctx;
    const osp_mime_message_t *m = ctx->msg;
    const char *v = NULL;
    size_t i, vlen;
    int r;

#define TRY(s, n) do { \
        r = test_value(ev, c, (s), (n)); \
        if (r > 0) return 1; \
        if (r < 0) ev->error = true; \
    } while (0)
#define TRYS(s) do { const char *s_ = (s); if (s_ != NULL) TRY(s_, strlen(s_)); } while (0)
#define TRYNE(s) do { const char *s_ = (s); if (s_ != NULL && *s_ != '\0') TRY(s_, strlen(s_)); } while (0)

    switch (c->f->id) {
    case F_SENDER: TRYS(ctx->sender); return 0;
    case F_CLIENT_ADDRESS: TRYS(ctx->client_address); return 0;
    case F_CLIENT_NAME: TRYS(ctx->client_name); return 0;
    case F_HELO: TRYS(ctx->helo); return 0;
    case F_SPF: TRYS(ctx->spf); return 0;
    case F_DKIM: TRYS(ctx->dkim); return 0;
    case F_DMARC: TRYS(ctx->dmarc); return 0;
    case F_RECIPIENT:
        for (i = 0; i < ctx->n_recipients; i++)
            TRYS(ctx->recipients[i]);
        return 0;
    case F_DNSBL:
        for (i = 0; i < ctx->n_dnsbl; i++)
            TRYS(ctx->dnsbl[i]);
        return 0;
    default:
        break;
    }
    if (m == NULL)
        return 0;
    switch (c->f->id) {
    case F_HEADER:
        for (i = 0; (v = osp_mime_header_get(m, c->hname, i)) != NULL; i++)
            TRY(v, strlen(v));
        return 0;
    case F_SUBJECT:
        TRYS(osp_mime_header_get(m, "Subject", 0));
        return 0;
    case F_FROM_NAME: case F_FROM_ADDRESS: case F_FROM_DOMAIN:
    case F_TO_NAME: case F_TO_ADDRESS: case F_TO_DOMAIN: {
        bool to = c->f->id >= F_TO_NAME;
        const osp_mailbox_list_t *l = mboxes(ev->sc, to);
        size_t k = (size_t)(c->f->id - (to ? F_TO_NAME : F_FROM_NAME));

        for (i = 0; i < l->n; i++) {
            v = osp_mailbox_part(l, i, k);
            if (*v != '\0' || c->rel != R_EXISTS)
                TRY(v, strlen(v));
        }
        return 0;
    }
    case F_BODY:
        vlen = m->text_len;
        TRY(m->text != NULL ? m->text : "", vlen);
        return 0;
    case F_BODY_INVISIBLE:
        if (m->invisible_len > 0 || c->rel != R_EXISTS)
            TRY(m->invisible != NULL ? m->invisible : "", m->invisible_len);
        return 0;
    case F_URL:
        for (i = 0; i < m->urls.n_urls; i++)
            TRYS(m->urls.urls[i].url);
        return 0;
    case F_URL_HOST:
        for (i = 0; i < m->urls.n_hosts; i++)
            TRYS(m->urls.hosts[i]);
        return 0;
    case F_ATT_NAME: case F_ATT_TYPE: case F_ATT_SNIFFED:
        for (i = 0; i < m->n_attachments; i++) {
            const osp_mime_part_t *pt = &m->parts[m->attachments[i]];

            TRYNE(c->f->id == F_ATT_NAME ? pt->filename
                  : c->f->id == F_ATT_TYPE ? pt->declared_type : pt->sniffed);
        }
        return 0;
    case F_PART_TYPE: case F_PART_ENCODING: case F_PART_CHARSET:
        for (i = 0; i < m->n_parts; i++) {
            const osp_mime_part_t *pt = &m->parts[i];

            if (pt->kind != OSP_MIME_LEAF)
                continue;
            TRYNE(c->f->id == F_PART_TYPE ? pt->type
                  : c->f->id == F_PART_ENCODING ? pt->cte_name : pt->charset);
        }
        return 0;
    default:
        return 0;
    }
#undef TRY
#undef TRYS
#undef TRYNE
}

static bool number_value(const struct eval *ev, enum field_id id, double *v)
{
    const osp_rules_ctx_t *ctx = ev->ctx;
    const osp_mime_message_t *m = ctx->msg;

    switch (id) {
    case F_BAYES:
        *v = ctx->bayes;
        return ctx->bayes >= 0;
    case F_RCPT_COUNT:
        *v = (double)ctx->n_recipients;
        return true;
    case F_SIZE:
        if (ctx->size > 0 || m == NULL) {
            *v = (double)ctx->size;
            return ctx->size > 0;
        }
        *v = (double)m->size;
        return true;
    case F_URL_COUNT:
        *v = m != NULL ? (double)m->urls.n_urls : 0;
        return m != NULL;
    case F_ATT_COUNT:
        *v = m != NULL ? (double)m->n_attachments : 0;
        return m != NULL;
    default:
        return false;
    }
}

static int eval_clause(struct eval *ev, const struct clause *c)
{
    int r = 0;

    switch (c->f->type) {
    case FT_NUM: {
        double v;

        if (number_value(ev, c->f->id, &v)) {
            switch (c->rel) {
            case R_EXISTS: r = 1; break;
            case R_IS: r = fabs(v - c->num) < 1e-9; break;
            case R_LT: r = v < c->num; break;
            case R_GT: r = v > c->num; break;
            case R_LE: r = v <= c->num; break;
            case R_GE: r = v >= c->num; break;
            default: r = 0; break;
            }
        }
        break;
    }
    case FT_ANOMALY: {
        uint64_t mask = ev->ctx->msg != NULL ? ev->ctx->msg->anomalies : 0;
        int i;

        if (c->rel == R_EXISTS) {
            r = mask != 0;
        } else if (c->rel == R_IS || c->rel == R_CONTAINS) {
            r = (mask & c->abit) != 0;
        } else {
            for (i = 0; i < OSP_MIME_A_COUNT && r == 0; i++) {
                const char *name = osp_mime_anomaly_name(UINT64_C(1) << i);

                if (mask & (UINT64_C(1) << i)) {
                    r = test_value(ev, c, name, strlen(name));
                    if (r < 0) {
                        ev->error = true;
                        r = 0;
                    }
                }
            }
        }
        break;
    }
    case FT_STR:
    case FT_IP:
        r = any_value(ev, c);
        break;
    }
    return c->neg ? !r : r;
}

static int eval_node(struct eval *ev, const struct node *n)
{
    size_t i;

    switch (n->kind) {
    case N_CLAUSE:
        return eval_clause(ev, n->cl);
    case N_NOT:
        return !eval_node(ev, n->kids[0]);
    case N_AND:
        for (i = 0; i < n->n_kids; i++)
            if (!eval_node(ev, n->kids[i]))
                return 0;
        return 1;
    case N_OR:
        for (i = 0; i < n->n_kids; i++)
            if (eval_node(ev, n->kids[i]))
                return 1;
        return 0;
    }
    osp_panic("osp_rules: bad node kind %d", (int)n->kind);
}

static void eval_rule(struct eval *ev, const struct rule *r, osp_rules_result_t *res)
{
    int hit;
    osp_rules_hit_t *h;

    ev->error = false;
    hit = eval_node(ev, r->expr);
    if (ev->error) {
        res->n_errors++;
        if (res->error_rule == NULL)
            res->error_rule = r->name;
        return;
    }
    if (!hit)
        return;
    if (res->n_hits == res->hits_alloc_) {
        res->hits_alloc_ = res->hits_alloc_ ? res->hits_alloc_ * 2 : 16;
        res->hits = osp_reallocarray(res->hits, res->hits_alloc_, sizeof(*res->hits));
    }
    h = &res->hits[res->n_hits++];
    h->name = r->name;
    h->description = r->desc;
    h->score = r->score;
    h->action = r->action;
    res->score += r->score;
    if (r->action > res->action)
        res->action = r->action;
}

static void eval_start(struct eval *ev, const osp_rules_ctx_t *ctx, osp_rules_scratch_t *sc)
{
    ev->ctx = ctx;
    ev->sc = sc;
    ev->error = false;
    sc->ctx = ctx;
    sc->have_from = sc->have_to = false;
}

void osp_rules_eval(const osp_rules_t *rules, const osp_rules_ctx_t *ctx,
                    osp_rules_scratch_t *scratch, osp_rules_result_t *result)
{
    struct eval ev;
    size_t i;

    eval_start(&ev, ctx, scratch);
    ev.rs = rules;
    for (i = 0; i < rules->n_rules; i++)
        eval_rule(&ev, &rules->rules[i], result);
}

static bool sorted_has(char *const *names, size_t n, const char *name)
{
    return n > 0 && bsearch(&name, names, n, sizeof(*names), cmp_str) != NULL;
}

void osp_rules_eval_sets(const osp_rules_t *const *sets, size_t n_sets,
                         const osp_rules_ctx_t *ctx, osp_rules_scratch_t *scratch,
                         osp_rules_result_t *result)
{
    struct eval ev;
    size_t s, t, i;

    eval_start(&ev, ctx, scratch);
    for (s = 0; s < n_sets; s++) {
        const osp_rules_t *rs = sets[s];

        if (rs == NULL)
            continue;
        ev.rs = rs;
        for (i = 0; i < rs->n_rules; i++) {
            const char *name = rs->rules[i].name;
            bool over = false;

            for (t = s + 1; t < n_sets && !over; t++)
                over = sets[t] != NULL
                       && (sorted_has((char *const *)sets[t]->names, sets[t]->n_rules, name)
                           || sorted_has(sets[t]->disabled, sets[t]->n_disabled, name));
            if (!over)
                eval_rule(&ev, &rs->rules[i], result);
        }
    }
}
