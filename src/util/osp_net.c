/* osp_net: IP address and CIDR parsing, and a Patricia trie for LPM. */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "osp_buf.h"
#include "osp_log.h"
#include "osp_mem.h"
#include "osp_net.h"

/* ------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------ */

static const uint8_t osp_net_v4mapped_prefix[12] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

static int osp_net_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Exactly four decimal parts 0-255 without leading zeros, nothing else. */
static int osp_net_parse_v4(const char *s, size_t len, uint8_t out[4])
{
    size_t i = 0;
    int part;

    for (part = 0; part < 4; part++) {
        unsigned v = 0;
        size_t start = i;

        if (part > 0) {
            if (i >= len || s[i] != '.')
                return -1;
            start = ++i;
        }
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
            return -1;
        out[part] = (uint8_t)v;
    }
    return i == len ? 0 : -1;
}

/* RFC 4291 section 2.2 text forms; no zone id. */
static int osp_net_parse_v6(const char *s, size_t len, uint8_t out[16])
{
    uint16_t groups[8];
    int ngroups = 0;
    int gap = -1;           /* group index where "::" stands */
    size_t i = 0;
    int g;

    if (len >= 2 && s[0] == ':' && s[1] == ':') {
        gap = 0;
        i = 2;
    }
    while (i < len) {
        size_t start = i;
        unsigned v = 0;
        int d;

        while (i < len && i - start < 5 && (d = osp_net_hexval(s[i])) >= 0) {
            v = v * 16 + (unsigned)d;
            i++;
        }
        if (i == start)
            return -1;
        if (i < len && s[i] == '.') {
            uint8_t b4[4];

            /* An IPv4 tail fills the last two groups. */
            if (ngroups > 6 || osp_net_parse_v4(s + start, len - start, b4) < 0)
                return -1;
            groups[ngroups++] = (uint16_t)(b4[0] << 8 | b4[1]);
            groups[ngroups++] = (uint16_t)(b4[2] << 8 | b4[3]);
            i = len;
            break;
        }
        if (i - start > 4 || ngroups == 8)
            return -1;
        groups[ngroups++] = (uint16_t)v;
        if (i == len)
            break;
        if (s[i] != ':' || ++i == len)
            return -1;
        if (s[i] == ':') {
            if (gap >= 0)
                return -1;
            gap = ngroups;
            i++;
        }
    }
    if (gap < 0 ? ngroups != 8 : ngroups > 7)
        return -1;

    memset(out, 0, 16);
    for (g = 0; g < ngroups; g++) {
        int at = g < gap || gap < 0 ? g : g + 8 - ngroups;

        out[2 * at] = (uint8_t)(groups[g] >> 8);
        out[2 * at + 1] = (uint8_t)groups[g];
    }
    return 0;
}

/* An address without brackets, possibly tagged "IPv6:". */
static int osp_net_parse_ip(const char *s, size_t len, osp_ip_t *ip_r)
{
    memset(ip_r, 0, sizeof(*ip_r));
    if (len >= 5 && strncasecmp(s, "IPv6:", 5) == 0) {
        ip_r->family = OSP_IP_V6;
        return osp_net_parse_v6(s + 5, len - 5, ip_r->addr);
    }
    if (memchr(s, ':', len) != NULL) {
        ip_r->family = OSP_IP_V6;
        return osp_net_parse_v6(s, len, ip_r->addr);
    }
    ip_r->family = OSP_IP_V4;
    return osp_net_parse_v4(s, len, ip_r->addr);
}

int osp_ip_parse(const char *s, osp_ip_t *ip_r)
{
    size_t len = strlen(s);

    if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
        return osp_net_parse_ip(s + 1, len - 2, ip_r);
    return osp_net_parse_ip(s, len, ip_r);
}

const char *osp_ip_format(const osp_ip_t *ip, char *buf, size_t size)
{
    const uint8_t *a = ip->addr;
    char tmp[OSP_IP_STRLEN];
    size_t n = 0;
    int best = -1, bestlen = 1;     /* "::" only for two or more groups */
    int g, run;

    if (ip->family == OSP_IP_V4) {
        osp_snprintf(buf, size, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        return buf;
    }
    if (osp_ip_is_v4mapped(ip)) {
        osp_snprintf(buf, size, "::ffff:%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
        return buf;
    }
    for (g = 0; g < 8; g += run ? run : 1) {
        for (run = 0; g + run < 8 && a[2 * (g + run)] == 0 && a[2 * (g + run) + 1] == 0; run++)
            ;
        if (run > bestlen) {
            best = g;
            bestlen = run;
        }
    }
    for (g = 0; g < 8; g++) {
        if (g == best) {
            tmp[n++] = ':';
            tmp[n++] = ':';
            g += bestlen - 1;
            continue;
        }
        if (g > 0 && g != best + bestlen)
            tmp[n++] = ':';
        n += (size_t)osp_snprintf(tmp + n, sizeof(tmp) - n, "%x",
                                  (unsigned)(a[2 * g] << 8 | a[2 * g + 1]));
    }
    tmp[n] = '\0';
    osp_strlcpy(buf, tmp, size);
    return buf;
}

int osp_ip_from_sockaddr(const struct sockaddr *sa, osp_ip_t *ip_r)
{
    memset(ip_r, 0, sizeof(*ip_r));
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;

        memcpy(&sin, sa, sizeof(sin));
        ip_r->family = OSP_IP_V4;
        memcpy(ip_r->addr, &sin.sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;

        memcpy(&sin6, sa, sizeof(sin6));
        ip_r->family = OSP_IP_V6;
        memcpy(ip_r->addr, &sin6.sin6_addr, 16);
        return 0;
    }
    return -1;
}

bool osp_ip_is_v4(const osp_ip_t *ip)
{
    return ip->family == OSP_IP_V4;
}

bool osp_ip_is_v4mapped(const osp_ip_t *ip)
{
    return ip->family == OSP_IP_V6
        && memcmp(ip->addr, osp_net_v4mapped_prefix, sizeof(osp_net_v4mapped_prefix)) == 0;
}

bool osp_ip_unmap(osp_ip_t *ip)
{
    if (!osp_ip_is_v4mapped(ip))
        return false;
    ip->family = OSP_IP_V4;
    memmove(ip->addr, ip->addr + 12, 4);
    memset(ip->addr + 4, 0, 12);
    return true;
}

int osp_ip_compare(const osp_ip_t *a, const osp_ip_t *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    return memcmp(a->addr, b->addr, a->family == OSP_IP_V4 ? 4 : 16);
}

bool osp_ip_equal(const osp_ip_t *a, const osp_ip_t *b)
{
    return osp_ip_compare(a, b) == 0;
}

int osp_ip_reverse_name(const osp_ip_t *ip, char *buf, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    osp_ip_t u = *ip;
    char tmp[OSP_IP_REVERSE_LEN];
    size_t n = 0;
    int i;

    osp_ip_unmap(&u);
    if (u.family == OSP_IP_V4) {
        osp_snprintf(tmp, sizeof(tmp), "%u.%u.%u.%u",
                     u.addr[3], u.addr[2], u.addr[1], u.addr[0]);
    } else {
        for (i = 15; i >= 0; i--) {
            tmp[n++] = hex[u.addr[i] & 15];
            tmp[n++] = '.';
            tmp[n++] = hex[u.addr[i] >> 4];
            tmp[n++] = i > 0 ? '.' : '\0';
        }
    }
    if (osp_strlcpy(buf, tmp, size) >= size) {
        if (size > 0)
            buf[0] = '\0';
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------
 * CIDR prefixes
 * ------------------------------------------------------------------ */

static unsigned osp_net_maxlen(const osp_ip_t *ip)
{
    return ip->family == OSP_IP_V4 ? 32 : 128;
}

/* Clear the bits of addr past len. */
static void osp_net_mask(uint8_t addr[16], unsigned len)
{
    unsigned i = len / 8;

    if (len % 8) {
        addr[i] &= (uint8_t)(0xff << (8 - len % 8));
        i++;
    }
    if (i < 16)
        memset(addr + i, 0, 16 - i);
}

/*
 * An IPv4-mapped address or a prefix of at least 96 bits inside
 * ::ffff:0:0/96 becomes IPv4; *len is adjusted to match.
 */
static void osp_net_unmap_prefix(osp_ip_t *ip, unsigned *len)
{
    if (*len >= 96 && osp_ip_unmap(ip))
        *len -= 96;
}

/*
 * Quote s for an error message: bytes outside printable ASCII and the
 * backslash as \xHH, cut short with "..." if it does not fit.
 */
static const char *osp_net_quote(char *dst, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, n = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '\\';

        if (n + (plain ? 1 : 4) > size - 4) {
            memcpy(dst + n, "...", 3);
            n += 3;
            break;
        }
        if (plain) {
            dst[n++] = (char)c;
        } else {
            dst[n++] = '\\';
            dst[n++] = 'x';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        }
    }
    dst[n] = '\0';
    return dst;
}

static int osp_net_cidr_error(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int osp_net_cidr_error(char *err, size_t errsize, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errsize > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errsize, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Decimal without sign or leading zeros; -1 if not that, 999 if long. */
static int osp_net_parse_prefixlen(const char *s, size_t len)
{
    int v = 0;
    size_t i;

    if (len == 0 || (s[0] == '0' && len > 1))
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v < 999)
            v = v * 10 + (s[i] - '0');
    }
    return v > 999 ? 999 : v;
}

int osp_cidr_parse(const char *s, osp_cidr_t *cidr_r, char *err, size_t errsize)
{
    char qs[96], qpart[96], want[OSP_CIDR_STRLEN];
    size_t len = strlen(s);
    const char *addr = s, *plen = NULL, *slash;
    size_t addrlen = len, plenlen = 0;
    osp_cidr_t masked;
    unsigned maxlen;
    int n;

    memset(cidr_r, 0, sizeof(*cidr_r));
    osp_net_quote(qs, sizeof(qs), s, len);

    /* "[addr]/len", "[addr/len]" or "[addr]"; otherwise "addr[/len]". */
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        if (close == NULL)
            return osp_net_cidr_error(err, errsize, "missing \"]\" in \"%s\"", qs);
        addr = s + 1;
        addrlen = (size_t)(close - addr);
        if (close + 1 < s + len) {
            if (close[1] != '/')
                return osp_net_cidr_error(err, errsize,
                                          "unexpected text after \"]\" in \"%s\"", qs);
            plen = close + 2;
            plenlen = len - (size_t)(plen - s);
        }
    }
    if (plen == NULL) {
        for (slash = addr + addrlen; slash > addr && slash[-1] != '/'; slash--)
            ;
        if (slash > addr) {
            plen = slash;
            plenlen = addrlen - (size_t)(plen - addr);
            addrlen = (size_t)(slash - 1 - addr);
        }
    }

    if (osp_net_parse_ip(addr, addrlen, &cidr_r->net) < 0) {
        if (addrlen == len)
            return osp_net_cidr_error(err, errsize, "invalid IP address \"%s\"", qs);
        return osp_net_cidr_error(err, errsize, "invalid IP address \"%s\" in \"%s\"",
                                  osp_net_quote(qpart, sizeof(qpart), addr, addrlen), qs);
    }
    maxlen = osp_net_maxlen(&cidr_r->net);
    if (plen == NULL) {
        n = (int)maxlen;
    } else if ((n = osp_net_parse_prefixlen(plen, plenlen)) < 0) {
        return osp_net_cidr_error(err, errsize, "invalid prefix length \"%s\" in \"%s\"",
                                  osp_net_quote(qpart, sizeof(qpart), plen, plenlen), qs);
    } else if ((unsigned)n > maxlen) {
        return osp_net_cidr_error(err, errsize,
                                  "prefix length \"%s\" out of range 0-%u in \"%s\"",
                                  osp_net_quote(qpart, sizeof(qpart), plen, plenlen),
                                  maxlen, qs);
    }
    cidr_r->prefixlen = (uint8_t)n;

    masked = *cidr_r;
    osp_net_mask(masked.net.addr, masked.prefixlen);
    if (memcmp(masked.net.addr, cidr_r->net.addr, sizeof(masked.net.addr)) != 0)
        return osp_net_cidr_error(err, errsize, "non-null host address bits in \"%s\", "
                                  "perhaps you should use \"%s\"",
                                  qs, osp_cidr_format(&masked, want, sizeof(want)));
    return 0;
}

const char *osp_cidr_format(const osp_cidr_t *cidr, char *buf, size_t size)
{
    char a[OSP_IP_STRLEN];

    osp_snprintf(buf, size, "%s/%u", osp_ip_format(&cidr->net, a, sizeof(a)), cidr->prefixlen);
    return buf;
}

bool osp_cidr_match(const osp_cidr_t *cidr, const osp_ip_t *ip)
{
    osp_ip_t net = cidr->net, host = *ip;
    unsigned len = cidr->prefixlen;

    osp_net_unmap_prefix(&net, &len);
    osp_ip_unmap(&host);
    if (net.family != host.family || len > osp_net_maxlen(&net))
        return false;
    osp_net_mask(net.addr, len);
    osp_net_mask(host.addr, len);
    return memcmp(net.addr, host.addr, 16) == 0;
}

/* ------------------------------------------------------------------
 * Prefix sets: one path-compressed binary trie per family.
 *
 * Every node holds a prefix (key, plen).  A node either carries a value
 * (a prefix that was added) or is a branching node created where two
 * prefixes part; a child's prefix always extends its parent's, and the
 * child on side b continues with bit b at position parent->plen.  Keys
 * are arrays of 32-bit words, most significant bit first, bits past plen
 * zero: one word for IPv4, four for IPv6.
 *
 * Nodes live in fixed-size chunks that never move and are addressed by
 * 32-bit index, which keeps IPv4 nodes at 20 bytes.
 * ------------------------------------------------------------------ */

#define OSP_NET_NONE UINT32_MAX
#define OSP_NET_CHUNK_SHIFT 10
#define OSP_NET_CHUNK_NODES (1u << OSP_NET_CHUNK_SHIFT)

struct osp_net_node {
    uint32_t child[2];
    uint32_t value;
    uint8_t plen;
    uint8_t has_value;
    uint8_t pad[2];
    uint32_t key[];         /* trie->nwords words */
};

struct osp_net_trie {
    unsigned nwords;        /* 1 or 4 */
    unsigned maxlen;        /* 32 or 128 */
    size_t stride;          /* bytes per node */
    uint32_t root;
    uint32_t nnodes;
    char **chunks;          /* owned, each OSP_NET_CHUNK_NODES nodes */
    size_t nchunks, chunks_size;
    size_t count;           /* nodes with a value */
};

struct osp_cidrset {
    struct osp_net_trie v4, v6;
};

static void osp_net_trie_init(struct osp_net_trie *t, unsigned nwords)
{
    memset(t, 0, sizeof(*t));
    t->nwords = nwords;
    t->maxlen = nwords * 32;
    t->stride = sizeof(struct osp_net_node) + nwords * sizeof(uint32_t);
    t->root = OSP_NET_NONE;
}

static void osp_net_trie_close(struct osp_net_trie *t)
{
    size_t i;

    for (i = 0; i < t->nchunks; i++)
        free(t->chunks[i]);
    free(t->chunks);
    t->chunks = NULL;
    t->nchunks = t->chunks_size = 0;
}

static inline struct osp_net_node *osp_net_trie_node(const struct osp_net_trie *t, uint32_t i)
{
    char *chunk = t->chunks[i >> OSP_NET_CHUNK_SHIFT];

    return (struct osp_net_node *)(void *)(chunk + (i & (OSP_NET_CHUNK_NODES - 1)) * t->stride);
}

static inline unsigned osp_net_key_bit(const uint32_t *k, unsigned i)
{
    return (k[i >> 5] >> (31 - (i & 31))) & 1;
}

/* Do a and b agree on their first len bits? */
static inline bool osp_net_key_match(const uint32_t *a, const uint32_t *b, unsigned len)
{
    unsigned w = 0;

    for (; len >= 32; w++, len -= 32)
        if (a[w] != b[w])
            return false;
    return len == 0 || ((a[w] ^ b[w]) >> (32 - len)) == 0;
}

/* Length of the common prefix of a and b, at most max. */
static unsigned osp_net_key_common(const uint32_t *a, const uint32_t *b, unsigned max)
{
    unsigned w;

    for (w = 0; w * 32 < max; w++) {
        uint32_t x = a[w] ^ b[w];

        if (x != 0) {
            unsigned c = w * 32 + (unsigned)__builtin_clz(x);
            return c < max ? c : max;
        }
    }
    return max;
}

/* A new node for the first plen bits of key, without value or children. */
static uint32_t osp_net_trie_alloc(struct osp_net_trie *t, const uint32_t *key, unsigned plen)
{
    struct osp_net_node *n;
    uint32_t i = t->nnodes;
    unsigned w;

    if (i == OSP_NET_NONE)
        osp_panic("cidrset: too many nodes");
    if ((i & (OSP_NET_CHUNK_NODES - 1)) == 0) {
        if (t->nchunks == t->chunks_size) {
            t->chunks_size = t->chunks_size ? 2 * t->chunks_size : 4;
            t->chunks = osp_reallocarray(t->chunks, t->chunks_size, sizeof(*t->chunks));
        }
        t->chunks[t->nchunks++] = osp_malloc(OSP_NET_CHUNK_NODES * t->stride);
    }
    t->nnodes++;
    n = osp_net_trie_node(t, i);
    n->child[0] = n->child[1] = OSP_NET_NONE;
    n->value = 0;
    n->plen = (uint8_t)plen;
    n->has_value = 0;
    n->pad[0] = n->pad[1] = 0;
    for (w = 0; w < t->nwords; w++) {
        unsigned bits = plen > w * 32 ? plen - w * 32 : 0;

        n->key[w] = bits >= 32 ? key[w] : bits == 0 ? 0 : key[w] & ~(UINT32_MAX >> bits);
    }
    return i;
}

/* Make node i the root or parent's child on side. */
static void osp_net_trie_link(struct osp_net_trie *t, uint32_t parent, unsigned side,
                              uint32_t i)
{
    if (parent == OSP_NET_NONE)
        t->root = i;
    else
        osp_net_trie_node(t, parent)->child[side] = i;
}

/* 1 if new, 0 if the value was replaced. */
static int osp_net_trie_add(struct osp_net_trie *t, const uint32_t *key, unsigned plen,
                            uint32_t value)
{
    uint32_t parent = OSP_NET_NONE, i = t->root, nu, top;
    unsigned side = 0, c;
    struct osp_net_node *n;

    for (;;) {
        if (i == OSP_NET_NONE) {
            nu = osp_net_trie_alloc(t, key, plen);
            osp_net_trie_link(t, parent, side, nu);
            break;
        }
        n = osp_net_trie_node(t, i);
        c = osp_net_key_common(key, n->key, plen < n->plen ? plen : n->plen);
        if (c < n->plen) {
            /*
             * The new prefix leaves n's path above n (nodes never move, so
             * n stays valid across allocations).  It becomes n's parent if
             * it is a prefix of n; otherwise a branching node at bit c
             * takes both.
             */
            top = nu = osp_net_trie_alloc(t, key, plen);
            if (c == plen) {
                osp_net_trie_node(t, nu)->child[osp_net_key_bit(n->key, plen)] = i;
            } else {
                top = osp_net_trie_alloc(t, key, c);
                osp_net_trie_node(t, top)->child[osp_net_key_bit(key, c)] = nu;
                osp_net_trie_node(t, top)->child[osp_net_key_bit(n->key, c)] = i;
            }
            osp_net_trie_link(t, parent, side, top);
            break;
        }
        if (n->plen == plen) {
            int isnew = !n->has_value;

            n->value = value;
            n->has_value = 1;
            t->count += (size_t)isnew;
            return isnew;
        }
        parent = i;
        side = osp_net_key_bit(key, n->plen);
        i = n->child[side];
    }
    n = osp_net_trie_node(t, nu);
    n->value = value;
    n->has_value = 1;
    t->count++;
    return 1;
}

static enum osp_cidrset_result osp_net_trie_lookup(const struct osp_net_trie *t,
                                                   const uint32_t *key, uint32_t *value_r,
                                                   unsigned *prefixlen_r)
{
    const struct osp_net_node *n, *best = NULL;
    uint32_t i = t->root;

    while (i != OSP_NET_NONE) {
        n = osp_net_trie_node(t, i);
        if (!osp_net_key_match(key, n->key, n->plen))
            break;
        if (n->has_value)
            best = n;
        if (n->plen == t->maxlen)
            break;
        i = n->child[osp_net_key_bit(key, n->plen)];
    }
    if (best == NULL)
        return OSP_CIDRSET_NOTFOUND;
    if (value_r != NULL)
        *value_r = best->value;
    if (prefixlen_r != NULL)
        *prefixlen_r = best->plen;
    return OSP_CIDRSET_FOUND;
}

/* The trie key of an address: its 16 bytes as big-endian words. */
static void osp_net_key_from_ip(const osp_ip_t *ip, uint32_t key[4])
{
    unsigned w;

    for (w = 0; w < 4; w++)
        key[w] = (uint32_t)ip->addr[4 * w] << 24 | (uint32_t)ip->addr[4 * w + 1] << 16
            | (uint32_t)ip->addr[4 * w + 2] << 8 | ip->addr[4 * w + 3];
}

osp_cidrset_t *osp_cidrset_create(void)
{
    osp_cidrset_t *set = osp_malloc(sizeof(*set));

    osp_net_trie_init(&set->v4, 1);
    osp_net_trie_init(&set->v6, 4);
    return set;
}

void osp_cidrset_free(osp_cidrset_t **setp)
{
    osp_cidrset_t *set = *setp;

    if (set == NULL)
        return;
    osp_net_trie_close(&set->v4);
    osp_net_trie_close(&set->v6);
    free(set);
    *setp = NULL;
}

int osp_cidrset_add(osp_cidrset_t *set, const osp_cidr_t *cidr, uint32_t value)
{
    osp_ip_t net = cidr->net;
    unsigned len = cidr->prefixlen;
    uint32_t key[4];

    if ((net.family != OSP_IP_V4 && net.family != OSP_IP_V6) || len > osp_net_maxlen(&net))
        osp_panic("osp_cidrset_add: bad prefix (family %u, length %u)", net.family, len);
    osp_net_unmap_prefix(&net, &len);
    osp_net_key_from_ip(&net, key);
    return osp_net_trie_add(net.family == OSP_IP_V4 ? &set->v4 : &set->v6, key, len, value);
}

enum osp_cidrset_result osp_cidrset_lookup(const osp_cidrset_t *set, const osp_ip_t *ip,
                                           uint32_t *value_r, unsigned *prefixlen_r)
{
    osp_ip_t host = *ip;
    uint32_t key[4];

    osp_ip_unmap(&host);
    osp_net_key_from_ip(&host, key);
    if (host.family == OSP_IP_V4)
        return osp_net_trie_lookup(&set->v4, key, value_r, prefixlen_r);
    if (host.family == OSP_IP_V6)
        return osp_net_trie_lookup(&set->v6, key, value_r, prefixlen_r);
    return OSP_CIDRSET_NOTFOUND;
}

size_t osp_cidrset_count(const osp_cidrset_t *set)
{
    return set->v4.count + set->v6.count;
}

size_t osp_cidrset_memory(const osp_cidrset_t *set)
{
    const struct osp_net_trie *t[2] = { &set->v4, &set->v6 };
    size_t total = sizeof(*set);
    int i;

    for (i = 0; i < 2; i++)
        total += t[i]->chunks_size * sizeof(char *)
            + t[i]->nchunks * OSP_NET_CHUNK_NODES * t[i]->stride;
    return total;
}
