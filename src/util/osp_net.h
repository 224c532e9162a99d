/*
 * osp_net: IP addresses, CIDR prefixes and longest-prefix-match sets.
 *
 * osp_ip_t holds one IPv4 or IPv6 address by value; osp_cidr_t one network
 * prefix.  Both are plain structs the caller embeds or copies freely.
 *
 *   osp_cidrset_t *set;
 *   osp_ip_t ip;
 *   osp_cidr_t net;
 *   char err[256];
 *   uint32_t v;
 *
 *   if (osp_cidr_parse("192.0.2.0/24", &net, err, sizeof(err)) < 0)
 *       ... err names the problem and the input ...
 *   set = osp_cidrset_create();
 *   osp_cidrset_add(set, &net, 7);
 *   if (osp_ip_parse(client_address, &ip) == 0
 *       && osp_cidrset_lookup(set, &ip, &v, NULL) == OSP_CIDRSET_FOUND)
 *       ... v is the value of the longest matching prefix ...
 *   osp_cidrset_free(&set);
 *
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) denote the IPv4 host
 * a.b.c.d.  Parsing and formatting keep them as written, but everything
 * that asks "which network is this host in" (osp_cidr_match,
 * osp_cidrset_lookup, osp_ip_reverse_name) treats them as the IPv4
 * address: ::ffff:192.0.2.1 matches 192.0.2.0/24 and does not match ::/0.
 * Likewise an IPv6 prefix inside ::ffff:0:0/96 that is at least 96 bits
 * long is the IPv4 prefix it maps (::ffff:192.0.2.0/120 is 192.0.2.0/24).
 * osp_ip_unmap() converts explicitly, e.g. for a peer address taken from a
 * dual-stack socket.
 *
 * Nothing here allocates except a cidrset, and nothing blocks.
 */
#ifndef OSP_NET_H
#define OSP_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

enum osp_ip_family {
    OSP_IP_V4 = 4,
    OSP_IP_V6 = 6,
};

typedef struct osp_ip {
    uint8_t family;     /* enum osp_ip_family */
    /*
     * Network byte order.  IPv4 uses addr[0..3] and keeps addr[4..15]
     * zero, so prefix bit n is the same bit of addr in both families.
     */
    uint8_t addr[16];
} osp_ip_t;

/* Buffer sizes including the NUL. */
#define OSP_IP_STRLEN 46            /* ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 */
#define OSP_IP_REVERSE_LEN 64       /* 32 nibbles and 31 dots */
#define OSP_CIDR_STRLEN (OSP_IP_STRLEN + 4)

/*
 * Parse an address: dotted-quad IPv4 (four decimal parts, no leading
 * zeros), or any RFC 4291 IPv6 text form including "::" and an embedded
 * IPv4 tail (::ffff:192.0.2.1).  Also accepted: the whole address in
 * brackets ("[192.0.2.1]", "[2001:db8::1]") and the RFC 5321 / Postfix tag
 * "IPv6:" (any case) before an IPv6 address, inside brackets or not.
 * Rejected: zone ids (fe80::1%eth0), surrounding white space, prefixes.
 * Returns 0, or -1 with *ip_r unspecified.
 */
int osp_ip_parse(const char *s, osp_ip_t *ip_r);

/*
 * Write the address in canonical form: dotted quad, or RFC 5952 IPv6
 * (lower case, longest run of two or more zero groups as "::", IPv4-mapped
 * as ::ffff:a.b.c.d).  buf should hold OSP_IP_STRLEN bytes; a shorter one
 * gets a truncated, NUL-terminated string.  Returns buf.
 */
const char *osp_ip_format(const osp_ip_t *ip, char *buf, size_t size);

/*
 * Copy the address from a struct sockaddr_in or sockaddr_in6 (the port is
 * ignored; an IPv4-mapped address stays mapped).  0, or -1 for another
 * address family.
 */
int osp_ip_from_sockaddr(const struct sockaddr *sa, osp_ip_t *ip_r);

/* IPv4 family?  An IPv4-mapped IPv6 address is not (see below). */
bool osp_ip_is_v4(const osp_ip_t *ip);
/* An IPv6 address in ::ffff:0:0/96? */
bool osp_ip_is_v4mapped(const osp_ip_t *ip);
/* Turn an IPv4-mapped address into IPv4 in place; true if it was one. */
bool osp_ip_unmap(osp_ip_t *ip);

/*
 * Total order: IPv4 before IPv6, then by address bytes.  Exact: an
 * IPv4-mapped address differs from its IPv4 address (unmap first to
 * compare hosts).  Returns <0, 0 or >0.
 */
int osp_ip_compare(const osp_ip_t *a, const osp_ip_t *b);
bool osp_ip_equal(const osp_ip_t *a, const osp_ip_t *b);

/*
 * The reversed name used for DNSBL and PTR queries, without a zone and
 * without a trailing dot: "1.2.0.192" for 192.0.2.1, 32 dot-separated
 * nibbles for IPv6 ("1.0.0.0. ... .8.b.d.0.1.0.0.2" for 2001:db8::1).
 * The caller appends ".in-addr.arpa", ".ip6.arpa" or the list's zone.
 * IPv4-mapped addresses give the IPv4 name.  buf should hold
 * OSP_IP_REVERSE_LEN bytes.  Returns 0, or -1 (buf set to "") if it is
 * too small.
 */
int osp_ip_reverse_name(const osp_ip_t *ip, char *buf, size_t size);

typedef struct osp_cidr {
    osp_ip_t net;           /* host bits are zero */
    uint8_t prefixlen;      /* 0..32 for IPv4, 0..128 for IPv6 */
} osp_cidr_t;

/*
 * Parse "address/prefixlen" or a bare address (a host prefix, /32 or
 * /128).  The address is anything osp_ip_parse accepts; brackets may
 * enclose the address alone or the whole prefix, as in Postfix cidr
 * tables ("[2001:db8::]/32", "[2001:db8::/32]").  The prefix length is
 * decimal without leading zeros.  Like Postfix, host bits set past the
 * prefix are an error: "192.0.2.1/24" is rejected with a suggestion of
 * "192.0.2.0/24".
 *
 * Returns 0, or -1 (*cidr_r unspecified) with a message in err that
 * names the problem and quotes the input, non-printable bytes escaped as
 * \xHH, e.g. "prefix length \"33\" out of range 0-32 in \"10.0.0.0/33\"".
 * err may be NULL; otherwise it is always NUL-terminated when
 * errsize > 0.
 */
int osp_cidr_parse(const char *s, osp_cidr_t *cidr_r, char *err, size_t errsize);

/* "address/prefixlen" in canonical form; see osp_ip_format.  Returns buf. */
const char *osp_cidr_format(const osp_cidr_t *cidr, char *buf, size_t size);

/*
 * Is ip inside the prefix?  IPv4-mapped addresses and prefixes are
 * treated as IPv4 (see the top of this file); other mixed-family pairs do
 * not match.  Bits of cidr->net past prefixlen are ignored.
 */
bool osp_cidr_match(const osp_cidr_t *cidr, const osp_ip_t *ip);

/*
 * osp_cidrset: prefixes of both families, each with a caller-chosen
 * 32-bit value (typically an index into the caller's table of results).
 * Lookups find the longest matching prefix.
 *
 * Storage is a path-compressed binary (Patricia) trie per family: at most
 * 2n-1 nodes for n prefixes, 20 bytes per IPv4 node and 32 per IPv6 node,
 * allocated in chunks, so a million IPv4 prefixes take 40 MB at most.  A
 * lookup or add walks one root-to-leaf path, each node strictly longer
 * than its parent: at most 33 nodes for IPv4, 129 for IPv6, about
 * log2(n) in practice.  There is no removal: build a new set and swap it
 * in on reload.
 *
 * Not thread-safe for writers; concurrent lookups on a set nobody adds to
 * are fine.
 */
typedef struct osp_cidrset osp_cidrset_t;

enum osp_cidrset_result {
    OSP_CIDRSET_NOTFOUND = 0,
    OSP_CIDRSET_FOUND = 1,
    /* An in-memory set has no temporary failure. */
};

/* An empty set; the caller owns it. */
osp_cidrset_t *osp_cidrset_create(void);
/* Free the set (NULL is fine) and clear the caller's pointer. */
void osp_cidrset_free(osp_cidrset_t **setp);

/*
 * Add a prefix (copied) with its value.  Adding a prefix that is already
 * present replaces its value.  Bits of cidr->net past prefixlen are
 * ignored; a prefix length beyond the family's width is a bug (abort).
 * Returns 1 if the prefix is new, 0 if its value was replaced.
 */
int osp_cidrset_add(osp_cidrset_t *set, const osp_cidr_t *cidr, uint32_t value);

/*
 * Find the longest prefix containing ip.  On OSP_CIDRSET_FOUND, *value_r
 * and *prefixlen_r (either may be NULL) are set to its value and length;
 * for an IPv4-mapped address the length is that of the IPv4 prefix.
 */
enum osp_cidrset_result osp_cidrset_lookup(const osp_cidrset_t *set, const osp_ip_t *ip,
                                           uint32_t *value_r, unsigned *prefixlen_r);

/* Distinct prefixes in the set. */
size_t osp_cidrset_count(const osp_cidrset_t *set);
/* Bytes allocated by the set, for logging and metrics. */
size_t osp_cidrset_memory(const osp_cidrset_t *set);

#endif
