/* osp_html: HTML to visible text, invisible text and links. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osp_buf.h"
#include "osp_html.h"
#include "osp_mem.h"
#include "osp_url.h"

#define DEF_MAX_LINKS      1000
#define DEF_MAX_INVISIBLE  (256 * 1024)
#define DEF_MAX_DEPTH      256
#define DEF_MAX_ANCHOR     256
#define MAX_HIDDEN_CLASSES 64
#define MAX_CLASS_LEN      64
#define TAG_NAME_MAX       15
#define COLOR_CLOSE        30      /* |dr|+|dg|+|db| at most this: unreadable */
#define WHITE              0xffffff
#define BLACK              0x000000

/* ---- Character references --------------------------------------------- */

struct entity {
    const char *name;
    unsigned cp;
};

/* HTML 4.01 named character references plus &apos;, sorted for bsearch. */
static const struct entity entities[] = {
    { "AElig", 0xc6 }, { "Aacute", 0xc1 }, { "Acirc", 0xc2 },
    { "Agrave", 0xc0 }, { "Alpha", 0x391 }, { "Aring", 0xc5 },
    { "Atilde", 0xc3 }, { "Auml", 0xc4 }, { "Beta", 0x392 },
    { "Ccedil", 0xc7 }, { "Chi", 0x3a7 }, { "Dagger", 0x2021 },
    { "Delta", 0x394 }, { "ETH", 0xd0 }, { "Eacute", 0xc9 },
    { "Ecirc", 0xca }, { "Egrave", 0xc8 }, { "Epsilon", 0x395 },
    { "Eta", 0x397 }, { "Euml", 0xcb }, { "Gamma", 0x393 },
    { "Iacute", 0xcd }, { "Icirc", 0xce }, { "Igrave", 0xcc },
    { "Iota", 0x399 }, { "Iuml", 0xcf }, { "Kappa", 0x39a },
    { "Lambda", 0x39b }, { "Mu", 0x39c }, { "Ntilde", 0xd1 }, { "Nu", 0x39d },
    { "OElig", 0x152 }, { "Oacute", 0xd3 }, { "Ocirc", 0xd4 },
    { "Ograve", 0xd2 }, { "Omega", 0x3a9 }, { "Omicron", 0x39f },
    { "Oslash", 0xd8 }, { "Otilde", 0xd5 }, { "Ouml", 0xd6 },
    { "Phi", 0x3a6 }, { "Pi", 0x3a0 }, { "Prime", 0x2033 }, { "Psi", 0x3a8 },
    { "Rho", 0x3a1 }, { "Scaron", 0x160 }, { "Sigma", 0x3a3 },
    { "THORN", 0xde }, { "Tau", 0x3a4 }, { "Theta", 0x398 },
    { "Uacute", 0xda }, { "Ucirc", 0xdb }, { "Ugrave", 0xd9 },
    { "Upsilon", 0x3a5 }, { "Uuml", 0xdc }, { "Xi", 0x39e },
    { "Yacute", 0xdd }, { "Yuml", 0x178 }, { "Zeta", 0x396 },
    { "aacute", 0xe1 }, { "acirc", 0xe2 }, { "acute", 0xb4 },
    { "aelig", 0xe6 }, { "agrave", 0xe0 }, { "alefsym", 0x2135 },
    { "alpha", 0x3b1 }, { "amp", 0x26 }, { "and", 0x2227 }, { "ang", 0x2220 },
    { "apos", 0x27 }, { "aring", 0xe5 }, { "asymp", 0x2248 },
    { "atilde", 0xe3 }, { "auml", 0xe4 }, { "bdquo", 0x201e },
    { "beta", 0x3b2 }, { "brvbar", 0xa6 }, { "bull", 0x2022 },
    { "cap", 0x2229 }, { "ccedil", 0xe7 }, { "cedil", 0xb8 },
    { "cent", 0xa2 }, { "chi", 0x3c7 }, { "circ", 0x2c6 },
    { "clubs", 0x2663 }, { "cong", 0x2245 }, { "copy", 0xa9 },
    { "crarr", 0x21b5 }, { "cup", 0x222a }, { "curren", 0xa4 },
    { "dArr", 0x21d3 }, { "dagger", 0x2020 }, { "darr", 0x2193 },
    { "deg", 0xb0 }, { "delta", 0x3b4 }, { "diams", 0x2666 },
    { "divide", 0xf7 }, { "eacute", 0xe9 }, { "ecirc", 0xea },
    { "egrave", 0xe8 }, { "empty", 0x2205 }, { "emsp", 0x2003 },
    { "ensp", 0x2002 }, { "epsilon", 0x3b5 }, { "equiv", 0x2261 },
    { "eta", 0x3b7 }, { "eth", 0xf0 }, { "euml", 0xeb }, { "euro", 0x20ac },
    { "exist", 0x2203 }, { "fnof", 0x192 }, { "forall", 0x2200 },
    { "frac12", 0xbd }, { "frac14", 0xbc }, { "frac34", 0xbe },
    { "frasl", 0x2044 }, { "gamma", 0x3b3 }, { "ge", 0x2265 }, { "gt", 0x3e },
    { "hArr", 0x21d4 }, { "harr", 0x2194 }, { "hearts", 0x2665 },
    { "hellip", 0x2026 }, { "iacute", 0xed }, { "icirc", 0xee },
    { "iexcl", 0xa1 }, { "igrave", 0xec }, { "image", 0x2111 },
    { "infin", 0x221e }, { "int", 0x222b }, { "iota", 0x3b9 },
    { "iquest", 0xbf }, { "isin", 0x2208 }, { "iuml", 0xef },
    { "kappa", 0x3ba }, { "lArr", 0x21d0 }, { "lambda", 0x3bb },
    { "lang", 0x2329 }, { "laquo", 0xab }, { "larr", 0x2190 },
    { "lceil", 0x2308 }, { "ldquo", 0x201c }, { "le", 0x2264 },
    { "lfloor", 0x230a }, { "lowast", 0x2217 }, { "loz", 0x25ca },
    { "lrm", 0x200e }, { "lsaquo", 0x2039 }, { "lsquo", 0x2018 },
    { "lt", 0x3c }, { "macr", 0xaf }, { "mdash", 0x2014 }, { "micro", 0xb5 },
    { "middot", 0xb7 }, { "minus", 0x2212 }, { "mu", 0x3bc },
    { "nabla", 0x2207 }, { "nbsp", 0xa0 }, { "ndash", 0x2013 },
    { "ne", 0x2260 }, { "ni", 0x220b }, { "not", 0xac }, { "notin", 0x2209 },
    { "nsub", 0x2284 }, { "ntilde", 0xf1 }, { "nu", 0x3bd },
    { "oacute", 0xf3 }, { "ocirc", 0xf4 }, { "oelig", 0x153 },
    { "ograve", 0xf2 }, { "oline", 0x203e }, { "omega", 0x3c9 },
    { "omicron", 0x3bf }, { "oplus", 0x2295 }, { "or", 0x2228 },
    { "ordf", 0xaa }, { "ordm", 0xba }, { "oslash", 0xf8 },
    { "otilde", 0xf5 }, { "otimes", 0x2297 }, { "ouml", 0xf6 },
    { "para", 0xb6 }, { "part", 0x2202 }, { "permil", 0x2030 },
    { "perp", 0x22a5 }, { "phi", 0x3c6 }, { "pi", 0x3c0 }, { "piv", 0x3d6 },
    { "plusmn", 0xb1 }, { "pound", 0xa3 }, { "prime", 0x2032 },
    { "prod", 0x220f }, { "prop", 0x221d }, { "psi", 0x3c8 },
    { "quot", 0x22 }, { "rArr", 0x21d2 }, { "radic", 0x221a },
    { "rang", 0x232a }, { "raquo", 0xbb }, { "rarr", 0x2192 },
    { "rceil", 0x2309 }, { "rdquo", 0x201d }, { "real", 0x211c },
    { "reg", 0xae }, { "rfloor", 0x230b }, { "rho", 0x3c1 },
    { "rlm", 0x200f }, { "rsaquo", 0x203a }, { "rsquo", 0x2019 },
    { "sbquo", 0x201a }, { "scaron", 0x161 }, { "sdot", 0x22c5 },
    { "sect", 0xa7 }, { "shy", 0xad }, { "sigma", 0x3c3 },
    { "sigmaf", 0x3c2 }, { "sim", 0x223c }, { "spades", 0x2660 },
    { "sub", 0x2282 }, { "sube", 0x2286 }, { "sum", 0x2211 },
    { "sup", 0x2283 }, { "sup1", 0xb9 }, { "sup2", 0xb2 }, { "sup3", 0xb3 },
    { "supe", 0x2287 }, { "szlig", 0xdf }, { "tau", 0x3c4 },
    { "there4", 0x2234 }, { "theta", 0x3b8 }, { "thetasym", 0x3d1 },
    { "thinsp", 0x2009 }, { "thorn", 0xfe }, { "tilde", 0x2dc },
    { "times", 0xd7 }, { "trade", 0x2122 }, { "uArr", 0x21d1 },
    { "uacute", 0xfa }, { "uarr", 0x2191 }, { "ucirc", 0xfb },
    { "ugrave", 0xf9 }, { "uml", 0xa8 }, { "upsih", 0x3d2 },
    { "upsilon", 0x3c5 }, { "uuml", 0xfc }, { "weierp", 0x2118 },
    { "xi", 0x3be }, { "yacute", 0xfd }, { "yen", 0xa5 }, { "yuml", 0xff },
    { "zeta", 0x3b6 }, { "zwj", 0x200d }, { "zwnj", 0x200c },
};

/* windows-1252 code points for &#128; - &#159; (HTML5 "numeric character reference end"). */
static const unsigned short c1_1252[32] = {
    0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
    0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
    0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
};

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(int c)
{
    return is_alpha(c) || is_digit(c);
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t utf8_put(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static int entity_cmp(const void *k, const void *e)
{
    return strcmp(k, ((const struct entity *)e)->name);
}

/*
 * A character reference at s[0] == '&' (n bytes available): writes its
 * UTF-8 to out (at least 4 bytes) and returns the bytes consumed, or 0 if
 * it is not one (the '&' is then literal).
 */
static size_t entity_decode(const char *s, size_t n, char *out, size_t *outlen)
{
    size_t i = 1;

    if (n < 3)
        return 0;
    if (s[1] == '#') {
        unsigned long cp = 0;
        bool hex = false;
        size_t digits = 0;

        i = 2;
        if (i < n && (s[i] == 'x' || s[i] == 'X')) {
            hex = true;
            i++;
        }
        for (; i < n; i++) {
            int d = hex ? hexval((unsigned char)s[i]) : (is_digit((unsigned char)s[i]) ? s[i] - '0' : -1);

            if (d < 0)
                break;
            digits++;
            if (cp <= 0x10ffff)
                cp = cp * (hex ? 16 : 10) + (unsigned)d;
        }
        if (digits == 0)
            return 0;
        if (i < n && s[i] == ';')
            i++;
        if (cp >= 0x80 && cp <= 0x9f)
            cp = c1_1252[cp - 0x80];
        else if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            cp = 0xfffd;
        *outlen = utf8_put((unsigned)cp, out);
        return i;
    } else {
        char name[12];
        const struct entity *e;

        while (i < n && i < sizeof(name) && is_alnum((unsigned char)s[i])) {
            name[i - 1] = s[i];
            i++;
        }
        if (i == 1 || i == sizeof(name) || (i < n && is_alnum((unsigned char)s[i])))
            return 0;
        name[i - 1] = '\0';
        e = bsearch(name, entities, sizeof(entities) / sizeof(entities[0]),
                    sizeof(entities[0]), entity_cmp);
        if (e == NULL)
            return 0;
        if (i < n && s[i] == ';')
            i++;
        else if (i < n && s[i] == '=')
            return 0;   /* "&amp=" in a query string is literal (HTML5) */
        *outlen = utf8_put(e->cp, out);
        return i;
    }
}

int osp_html_decode_entities(const char *s, size_t len, osp_buf_t *out)
{
    while (len > 0) {
        const char *amp = memchr(s, '&', len);
        size_t seg = amp ? (size_t)(amp - s) : len, used, ol;
        char u[4];

        if (osp_buf_append(out, s, seg) < 0)
            return -1;
        if (amp == NULL)
            break;
        s += seg;
        len -= seg;
        used = entity_decode(s, len, u, &ol);
        if (used == 0) {
            used = 1;
            ol = 1;
            u[0] = '&';
        }
        if (osp_buf_append(out, u, ol) < 0)
            return -1;
        s += used;
        len -= used;
    }
    return 0;
}

/* ---- Colours and styles -------------------------------------------------- */

struct named_color {
    const char *name;
    int rgb;
};

static const struct named_color named_colors[] = {
    { "aqua", 0x00ffff }, { "azure", 0xf0ffff }, { "beige", 0xf5f5dc },
    { "black", 0x000000 }, { "blue", 0x0000ff }, { "cyan", 0x00ffff },
    { "floralwhite", 0xfffaf0 }, { "fuchsia", 0xff00ff }, { "ghostwhite", 0xf8f8ff },
    { "gray", 0x808080 }, { "green", 0x008000 }, { "grey", 0x808080 },
    { "honeydew", 0xf0fff0 }, { "ivory", 0xfffff0 }, { "lime", 0x00ff00 },
    { "linen", 0xfaf0e6 }, { "magenta", 0xff00ff }, { "maroon", 0x800000 },
    { "mintcream", 0xf5fffa }, { "navy", 0x000080 }, { "olive", 0x808000 },
    { "orange", 0xffa500 }, { "purple", 0x800080 }, { "red", 0xff0000 },
    { "seashell", 0xfff5ee }, { "silver", 0xc0c0c0 }, { "snow", 0xfffafa },
    { "teal", 0x008080 }, { "white", 0xffffff }, { "whitesmoke", 0xf5f5f5 },
    { "yellow", 0xffff00 },
};

/* Parse a number at the start of s; returns the bytes used, 0 if none. */
static size_t parse_num(const char *s, size_t n, double *v)
{
    size_t i = 0;
    double x = 0, scale = 1;
    bool neg = false, any = false;

    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    for (; i < n && is_digit((unsigned char)s[i]); i++) {
        if (x < 1e9)
            x = x * 10 + (s[i] - '0');
        any = true;
    }
    if (i < n && s[i] == '.') {
        for (i++; i < n && is_digit((unsigned char)s[i]); i++) {
            scale /= 10;
            x += (s[i] - '0') * scale;
            any = true;
        }
    }
    if (!any)
        return 0;
    *v = neg ? -x : x;
    return i;
}

enum color_result { COLOR_NONE, COLOR_RGB, COLOR_TRANSPARENT };

/*
 * A CSS or legacy attribute colour: "#rgb", "#rrggbb", "rrggbb" (legacy
 * attributes), "rgb(r,g,b)", "rgba(r,g,b,a)" (alpha 0 is transparent),
 * a few names, "transparent".  s is lower-case, trimmed.
 */
static enum color_result parse_color(const char *s, size_t n, int *rgb)
{
    size_t i;

    if (n > 0 && s[0] == '#') {
        s++;
        n--;
    }
    if (n == 3 || n == 6 || n == 8) {
        int v[8];

        for (i = 0; i < n; i++)
            if ((v[i] = hexval((unsigned char)s[i])) < 0)
                break;
        if (i == n) {
            if (n == 3)
                *rgb = (v[0] * 17) << 16 | (v[1] * 17) << 8 | v[2] * 17;
            else
                *rgb = (v[0] << 20) | (v[1] << 16) | (v[2] << 12) | (v[3] << 8) | (v[4] << 4) | v[5];
            if (n == 8 && v[6] == 0 && v[7] == 0)
                return COLOR_TRANSPARENT;
            return COLOR_RGB;
        }
    }
    if (n > 4 && (memcmp(s, "rgb(", 4) == 0 || (n > 5 && memcmp(s, "rgba(", 5) == 0))) {
        double c[4] = { 0, 0, 0, 1 };
        size_t k = 0;

        i = s[3] == '(' ? 4 : 5;
        while (k < 4 && i < n) {
            size_t used;

            while (i < n && (is_space((unsigned char)s[i]) || s[i] == ','))
                i++;
            used = parse_num(s + i, n - i, &c[k]);
            if (used == 0)
                break;
            i += used;
            if (i < n && s[i] == '%') {
                c[k] = k < 3 ? c[k] * 2.55 : c[k] / 100;
                i++;
            }
            k++;
        }
        if (k < 3)
            return COLOR_NONE;
        if (k == 4 && c[3] <= 0.05)
            return COLOR_TRANSPARENT;
        for (k = 0; k < 3; k++)
            c[k] = c[k] < 0 ? 0 : c[k] > 255 ? 255 : c[k];
        *rgb = (int)c[0] << 16 | (int)c[1] << 8 | (int)c[2];
        return COLOR_RGB;
    }
    if (n == 11 && memcmp(s, "transparent", 11) == 0)
        return COLOR_TRANSPARENT;
    for (i = 0; i < sizeof(named_colors) / sizeof(named_colors[0]); i++) {
        if (strlen(named_colors[i].name) == n && memcmp(named_colors[i].name, s, n) == 0) {
            *rgb = named_colors[i].rgb;
            return COLOR_RGB;
        }
    }
    return COLOR_NONE;
}

static bool colors_close(int a, int b)
{
    int dr = ((a >> 16) & 255) - ((b >> 16) & 255);
    int dg = ((a >> 8) & 255) - ((b >> 8) & 255);
    int db = (a & 255) - (b & 255);

    return abs(dr) + abs(dg) + abs(db) <= COLOR_CLOSE;
}

/* What one style="..." (or CSS rule body) says about visibility. */
struct style {
    bool hide;
    int tiny;       /* -1 unset, 0 normal size, 1 tiny */
    int fg, bg;     /* -1 unset */
};

/* Is a CSS length zero (any unit)? */
static bool css_zero(const char *v, size_t n)
{
    double x;
    size_t used = parse_num(v, n, &x);

    return used > 0 && x == 0;
}

static void style_decl(struct style *st, const char *p, size_t pn, const char *v, size_t vn,
                       bool *zero_box, bool *ov_hidden)
{
    int rgb;
    double x;
    size_t used;

#define PROP(lit) (pn == sizeof(lit) - 1 && memcmp(p, lit, pn) == 0)
#define VAL(lit) (vn == sizeof(lit) - 1 && memcmp(v, lit, vn) == 0)
    if (PROP("display")) {
        if (VAL("none"))
            st->hide = true;
    } else if (PROP("visibility")) {
        if (VAL("hidden") || VAL("collapse"))
            st->hide = true;
    } else if (PROP("opacity")) {
        if (parse_num(v, vn, &x) > 0 && x < 0.1)
            st->hide = true;
    } else if (PROP("mso-hide")) {
        if (VAL("all"))
            st->hide = true;
    } else if (PROP("font-size")) {
        used = parse_num(v, vn, &x);
        st->tiny = 0;
        if (used > 0) {
            const char *u = v + used;
            size_t un = vn - used;

            if (x <= 0)
                st->tiny = 1;
            else if ((un == 2 && (memcmp(u, "px", 2) == 0 || memcmp(u, "pt", 2) == 0)) || un == 0)
                st->tiny = x <= 1;
            else if ((un == 2 && memcmp(u, "em", 2) == 0) || (un == 3 && memcmp(u, "rem", 3) == 0))
                st->tiny = x <= 0.1;
            else if (un == 1 && u[0] == '%')
                st->tiny = x <= 10;
        }
    } else if (PROP("color")) {
        switch (parse_color(v, vn, &rgb)) {
        case COLOR_RGB:
            st->fg = rgb;
            break;
        case COLOR_TRANSPARENT:
            st->hide = true;
            break;
        case COLOR_NONE:
            break;
        }
    } else if (PROP("background-color") || PROP("background")) {
        /* The shorthand: the first token that is a colour. */
        size_t i = 0;

        while (i < vn) {
            size_t j = i;

            while (j < vn && !is_space((unsigned char)v[j]))
                j++;
            if (v[i] == 'r' && j < vn && memchr(v + i, '(', j - i) && !memchr(v + i, ')', j - i)) {
                const char *close = memchr(v + i, ')', vn - i);

                j = close ? (size_t)(close - v) + 1 : vn;
            }
            if (parse_color(v + i, j - i, &rgb) == COLOR_RGB) {
                st->bg = rgb;
                break;
            }
            i = j;
            while (i < vn && is_space((unsigned char)v[i]))
                i++;
        }
    } else if (PROP("height") || PROP("max-height") || PROP("width") || PROP("max-width")) {
        if (css_zero(v, vn))
            *zero_box = true;
    } else if (PROP("overflow")) {
        if (VAL("hidden"))
            *ov_hidden = true;
    }
#undef PROP
#undef VAL
}

/* Parse declarations "prop: value; ..." (n bytes at s) into st. */
static void style_parse(const char *s, size_t n, struct style *st)
{
    bool zero_box = false, ov_hidden = false;
    size_t i = 0;

    while (i < n) {
        char p[24], v[64];
        size_t pn = 0, vn = 0, end;
        const char *semi = memchr(s + i, ';', n - i), *colon;

        end = semi ? (size_t)(semi - s) : n;
        colon = memchr(s + i, ':', end - i);
        if (colon) {
            size_t k;

            for (k = i; k < (size_t)(colon - s); k++)
                if (!is_space((unsigned char)s[k]) && pn < sizeof(p))
                    p[pn++] = (char)lower((unsigned char)s[k]);
            for (k = (size_t)(colon - s) + 1; k < end && is_space((unsigned char)s[k]); k++)
                ;
            for (; k < end && vn < sizeof(v); k++)
                v[vn++] = (char)lower((unsigned char)s[k]);
            while (vn > 0 && is_space((unsigned char)v[vn - 1]))
                vn--;
            if (vn >= 10 && memcmp(v + vn - 10, "!important", 10) == 0) {
                vn -= 10;
                while (vn > 0 && is_space((unsigned char)v[vn - 1]))
                    vn--;
            }
            if (pn < sizeof(p))
                style_decl(st, p, pn, v, vn, &zero_box, &ov_hidden);
        }
        i = end + 1;
    }
    if (zero_box && ov_hidden)
        st->hide = true;
}

/* ---- Tags -------------------------------------------------------------- */

/* Tag properties. */
#define P_VOID     0x001u   /* no end tag, no contents */
#define P_BLOCK    0x002u   /* a line break before and after */
#define P_SPACE    0x004u   /* a space before and after (cells, images) */
#define P_RAWTEXT  0x008u   /* contents up to the end tag are not markup */
#define P_TEXT     0x010u   /* ... but text to show (title, textarea, xmp) */
#define P_SIBLING  0x020u   /* closed by an open sibling of the same name */
#define P_SCOPE    0x040u   /* bounds the search for such a sibling */
#define P_PRE      0x080u   /* white space is kept */
#define P_SRC      0x100u   /* src= is a link */

/* The tags we know. */
#define TAGS(X) \
    X(A, "a", 0) \
    X(ADDRESS, "address", P_BLOCK) \
    X(AREA, "area", P_VOID) \
    X(ARTICLE, "article", P_BLOCK) \
    X(ASIDE, "aside", P_BLOCK) \
    X(BASE, "base", P_VOID) \
    X(BASEFONT, "basefont", P_VOID) \
    X(BLOCKQUOTE, "blockquote", P_BLOCK | P_SCOPE) \
    X(BODY, "body", P_BLOCK | P_SCOPE) \
    X(BR, "br", P_VOID) \
    X(CAPTION, "caption", P_BLOCK) \
    X(CENTER, "center", P_BLOCK) \
    X(COL, "col", P_VOID) \
    X(DD, "dd", P_BLOCK | P_SIBLING) \
    X(DETAILS, "details", P_BLOCK) \
    X(DIALOG, "dialog", P_BLOCK) \
    X(DIR, "dir", P_BLOCK) \
    X(DIV, "div", P_BLOCK | P_SCOPE) \
    X(DL, "dl", P_BLOCK | P_SCOPE) \
    X(DT, "dt", P_BLOCK | P_SIBLING) \
    X(EMBED, "embed", P_VOID | P_SRC) \
    X(FIELDSET, "fieldset", P_BLOCK) \
    X(FIGCAPTION, "figcaption", P_BLOCK) \
    X(FIGURE, "figure", P_BLOCK) \
    X(FONT, "font", 0) \
    X(FOOTER, "footer", P_BLOCK) \
    X(FORM, "form", P_BLOCK) \
    X(FRAME, "frame", P_VOID | P_SRC) \
    X(H1, "h1", P_BLOCK) \
    X(H2, "h2", P_BLOCK) \
    X(H3, "h3", P_BLOCK) \
    X(H4, "h4", P_BLOCK) \
    X(H5, "h5", P_BLOCK) \
    X(H6, "h6", P_BLOCK) \
    X(HEADER, "header", P_BLOCK) \
    X(HGROUP, "hgroup", P_BLOCK) \
    X(HR, "hr", P_VOID) \
    X(HTML, "html", P_BLOCK | P_SCOPE) \
    X(IFRAME, "iframe", P_BLOCK | P_SRC) \
    X(IMG, "img", P_VOID | P_SPACE | P_SRC) \
    X(INPUT, "input", P_VOID | P_SRC) \
    X(KEYGEN, "keygen", P_VOID) \
    X(LI, "li", P_BLOCK | P_SIBLING) \
    X(LINK, "link", P_VOID) \
    X(LISTING, "listing", P_BLOCK | P_PRE) \
    X(MAIN, "main", P_BLOCK) \
    X(MENU, "menu", P_BLOCK) \
    X(META, "meta", P_VOID) \
    X(NAV, "nav", P_BLOCK) \
    X(NOEMBED, "noembed", P_RAWTEXT) \
    X(OL, "ol", P_BLOCK | P_SCOPE) \
    X(OPTION, "option", P_BLOCK | P_SIBLING) \
    X(P, "p", P_BLOCK | P_SIBLING) \
    X(PARAM, "param", P_VOID) \
    X(PRE, "pre", P_BLOCK | P_PRE) \
    X(SCRIPT, "script", P_RAWTEXT | P_SRC) \
    X(SECTION, "section", P_BLOCK) \
    X(SELECT, "select", P_SCOPE) \
    X(SOURCE, "source", P_VOID) \
    X(STYLE, "style", P_RAWTEXT) \
    X(SUMMARY, "summary", P_BLOCK) \
    X(TABLE, "table", P_BLOCK | P_SCOPE) \
    X(TBODY, "tbody", P_BLOCK) \
    X(TD, "td", P_SPACE | P_SIBLING) \
    X(TEMPLATE, "template", P_RAWTEXT) \
    X(TEXTAREA, "textarea", P_BLOCK | P_RAWTEXT | P_TEXT) \
    X(TFOOT, "tfoot", P_BLOCK) \
    X(TH, "th", P_SPACE | P_SIBLING) \
    X(THEAD, "thead", P_BLOCK) \
    X(TITLE, "title", P_BLOCK | P_RAWTEXT | P_TEXT) \
    X(TR, "tr", P_BLOCK | P_SIBLING) \
    X(TRACK, "track", P_VOID) \
    X(UL, "ul", P_BLOCK | P_SCOPE) \
    X(WBR, "wbr", P_VOID) \
    X(XMP, "xmp", P_BLOCK | P_RAWTEXT | P_TEXT)

enum tag_id {
    T_OTHER,
#define X(id, name, props) T_##id,
    TAGS(X)
#undef X
    T_COUNT
};

struct tag_info {
    const char *name;
    unsigned props;
};

static const struct tag_info tag_infos[T_COUNT] = {
    { "", 0 },
#define X(id, name, props) { name, props },
    TAGS(X)
#undef X
};

/*
 * Tag names are looked up in an open-addressed hash table, built once
 * (idempotently, so racing threads are harmless).
 */
#define TAG_SLOTS 256

static unsigned char tag_slots[TAG_SLOTS];     /* enum tag_id, 0 = free */
static bool tag_slots_ready;

static unsigned tag_hash(const char *s)
{
    unsigned h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void tag_slots_init(void)
{
    unsigned char t[TAG_SLOTS];
    unsigned i;

    if (__atomic_load_n(&tag_slots_ready, __ATOMIC_ACQUIRE))
        return;
    memset(t, 0, sizeof(t));
    for (i = 1; i < T_COUNT; i++) {
        unsigned k = tag_hash(tag_infos[i].name) % TAG_SLOTS;

        while (t[k] != 0)
            k = (k + 1) % TAG_SLOTS;
        t[k] = (unsigned char)i;
    }
    memcpy(tag_slots, t, sizeof(t));
    __atomic_store_n(&tag_slots_ready, true, __ATOMIC_RELEASE);
}

static enum tag_id tag_lookup(const char *name)
{
    unsigned k = tag_hash(name) % TAG_SLOTS;

    while (tag_slots[k] != 0) {
        if (strcmp(tag_infos[tag_slots[k]].name, name) == 0)
            return (enum tag_id)tag_slots[k];
        k = (k + 1) % TAG_SLOTS;
    }
    return T_OTHER;
}

/* ---- Conversion state ---------------------------------------------------- */

struct elem {
    unsigned id;        /* enum tag_id */
    unsigned key;       /* id, or for unknown tags T_COUNT + a hash of the name */
    char name[TAG_NAME_MAX + 1];
    bool hidden;        /* this element or an ancestor hides its content */
    bool tiny;
    bool pre;
    int fg, bg;
};

#define OTHER_BUCKETS 64
#define SEARCH_MAX    64    /* open elements looked through for a match */

struct conv {
    osp_html_t *h;
    osp_buf_t *text;
    struct elem *stack;
    size_t depth, overflow;
    unsigned open[T_COUNT + OTHER_BUCKETS];   /* open elements per key */
    struct elem root;
    bool invisible;     /* current text is invisible */
    bool pre;
    bool text_full;     /* the caller's buffer is full */
    /* visible output */
    bool vis_space, vis_nl;
    /* invisible output */
    bool inv_space, inv_open;
    /* the open <a>: index into h->links, or -1 */
    long link;
    osp_buf_t anchor;
    bool anchor_space;
    osp_buf_t tmp;      /* an attribute value, entity-decoded */
    osp_buf_t url;      /* a normalised URL */
};

static const struct elem *top(const struct conv *c)
{
    return c->depth ? &c->stack[c->depth - 1] : &c->root;
}

static void update_state(struct conv *c)
{
    const struct elem *e = top(c);

    c->invisible = e->hidden || e->tiny || colors_close(e->fg, e->bg);
    c->pre = e->pre;
    if (!c->invisible)
        c->inv_open = false;    /* the next invisible text is a new run */
}

/*
 * Append to b; when the cap is reached, fill it up to a character boundary
 * and return -1 (the caller then stops appending: no words after a gap).
 */
static int append_capped(osp_buf_t *b, const char *s, size_t n)
{
    size_t room = b->max - b->len;

    if (n <= room)
        return osp_buf_append(b, s, n);
    while (room > 0 && ((unsigned char)s[room] & 0xc0) == 0x80)
        room--;
    (void)osp_buf_append(b, s, room);
    return -1;
}

static void text_append(struct conv *c, const char *s, size_t n)
{
    if (c->text_full)
        return;
    if (append_capped(c->text, s, n) < 0) {
        c->text_full = true;
        c->h->flags |= OSP_HTML_F_TEXT_TRUNCATED;
    }
}

static void inv_append(struct conv *c, const char *s, size_t n)
{
    if (c->h->flags & OSP_HTML_F_INVISIBLE_TRUNCATED)
        return;
    if (append_capped(&c->h->invisible, s, n) < 0)
        c->h->flags |= OSP_HTML_F_INVISIBLE_TRUNCATED;
}

/* A word (no white space) of n bytes. */
static void put_word(struct conv *c, const char *s, size_t n)
{
    if (c->invisible) {
        if (!c->inv_open) {
            if (c->h->invisible.len > 0)
                inv_append(c, "\n", 1);
            c->h->n_invisible++;
            c->inv_open = true;
        } else if (c->inv_space) {
            inv_append(c, " ", 1);
        }
        c->inv_space = false;
        inv_append(c, s, n);
        return;
    }
    c->inv_open = false;
    if (c->text->len > 0) {
        if (c->vis_nl && c->text->len > 0 && c->text->data[c->text->len - 1] != '\n')
            text_append(c, "\n", 1);
        else if (c->vis_space && c->text->len > 0 && c->text->data[c->text->len - 1] != '\n'
                 && c->text->data[c->text->len - 1] != ' ')
            text_append(c, " ", 1);
    }
    c->vis_nl = c->vis_space = false;
    text_append(c, s, n);
    if (c->link >= 0) {
        bool sp = c->anchor_space && c->anchor.len > 0;

        if (c->anchor.len + sp + n <= c->anchor.max) {
            if (sp)
                (void)osp_buf_append_char(&c->anchor, ' ');
            (void)osp_buf_append(&c->anchor, s, n);
        } else if (c->anchor.len < c->anchor.max) {
            /* Full: keep the whole words that fit, then nothing more. */
            size_t room = c->anchor.max - c->anchor.len - sp;

            while (room > 0 && s[room] != ' ')
                room--;
            if (room > 0) {
                if (sp)
                    (void)osp_buf_append_char(&c->anchor, ' ');
                (void)osp_buf_append(&c->anchor, s, room);
            }
            c->anchor.max = c->anchor.len;
        }
        c->anchor_space = false;
    }
}

static void put_space(struct conv *c)
{
    c->inv_space = true;
    if (!c->invisible) {
        c->vis_space = true;
        c->anchor_space = true;
    }
}

/* A line break from markup (block elements, <br>). */
static void put_break(struct conv *c)
{
    c->vis_nl = true;
    c->inv_space = true;
    c->anchor_space = true;
}

/* Bytes that need a look in text: white space and UTF-8 leads of characters we map. */
static const unsigned char text_special[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, ['\f'] = 1, ['\v'] = 1,
    [0xc2] = 1, [0xe2] = 1, [0xef] = 1,
};

/* Text without markup or references. */
static void out_text(struct conv *c, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t j = i;
        const unsigned char *u;

        /* A run of words with single spaces between them goes out whole. */
        for (;;) {
            while (j < n && !text_special[(unsigned char)s[j]])
                j++;
            if (j > i && j + 1 < n && s[j] == ' ' && !text_special[(unsigned char)s[j + 1]] && !c->pre) {
                j++;
                continue;
            }
            break;
        }
        if (j > i) {
            put_word(c, s + i, j - i);
            i = j;
            continue;
        }
        u = (const unsigned char *)s + i;
        if (is_space(u[0])) {
            if (c->pre && !c->invisible) {
                if (u[0] == '\n') {
                    text_append(c, "\n", 1);
                    c->vis_space = c->vis_nl = false;
                } else if (u[0] != '\r') {
                    put_word(c, " ", 1);
                }
            } else {
                put_space(c);
            }
            i++;
        } else if (i + 1 < n && u[0] == 0xc2 && u[1] == 0xa0) {
            put_space(c);   /* no-break space */
            i += 2;
        } else if (i + 1 < n && u[0] == 0xc2 && u[1] == 0xad) {
            c->h->n_zero_width++;   /* soft hyphen */
            i += 2;
        } else if (i + 2 < n && ((u[0] == 0xe2 && u[1] == 0x80 && u[2] >= 0x8b && u[2] <= 0x8d)
                                 || (u[0] == 0xe2 && u[1] == 0x81 && u[2] == 0xa0)
                                 || (u[0] == 0xef && u[1] == 0xbb && u[2] == 0xbf))) {
            c->h->n_zero_width++;
            i += 3;
        } else {
            put_word(c, s + i, 1);
            i++;
        }
    }
}

/* Text with character references. */
static void text_run(struct conv *c, const char *s, size_t n)
{
    while (n > 0) {
        const char *amp = memchr(s, '&', n);
        size_t seg = amp ? (size_t)(amp - s) : n, used, ol;
        char u[4];

        out_text(c, s, seg);
        if (amp == NULL)
            return;
        s += seg;
        n -= seg;
        used = entity_decode(s, n, u, &ol);
        if (used == 0) {
            out_text(c, "&", 1);
            used = 1;
        } else {
            out_text(c, u, ol);
        }
        s += used;
        n -= used;
    }
}

/* ---- Links ------------------------------------------------------------- */

static osp_html_link_t *link_add(struct conv *c, enum osp_html_link_kind kind,
                                 const char *raw, size_t rawlen)
{
    osp_html_t *h = c->h;
    osp_html_link_t *l;
    char host[OSP_URL_HOST_BUFSIZE];
    unsigned fl = 0;
    const char *url;
    size_t ul, hl;
    char *mem;

    while (rawlen > 0 && is_space((unsigned char)*raw))
        raw++, rawlen--;
    while (rawlen > 0 && is_space((unsigned char)raw[rawlen - 1]))
        rawlen--;
    if (rawlen == 0)
        return NULL;
    if (h->n_links >= h->limits.max_links) {
        h->flags |= OSP_HTML_F_LINKS_TRUNCATED;
        return NULL;
    }
    osp_buf_reset(&c->tmp);
    (void)osp_html_decode_entities(raw, rawlen, &c->tmp);
    if (osp_url_normalize(osp_buf_cstr(&c->tmp), c->tmp.len, OSP_URL_NORM_HREF, &c->url, host, &fl) == 0) {
        ul = c->url.len;
        hl = strlen(host);
        mem = osp_malloc(ul + hl + 4);
        memcpy(mem, c->url.data, ul + 1);
    } else {
        ul = c->tmp.len > OSP_URL_MAX ? OSP_URL_MAX : c->tmp.len;
        while (ul > 0 && ul < c->tmp.len && ((unsigned char)c->tmp.data[ul] & 0xc0) == 0x80)
            ul--;
        hl = 0;
        host[0] = '\0';
        fl = OSP_HTML_LINK_NOT_URL;
        mem = osp_malloc(ul + 4);
        memcpy(mem, osp_buf_cstr(&c->tmp), ul);
        mem[ul] = '\0';
    }
    url = mem;
    memcpy(mem + ul + 1, host, hl + 1);
    mem[ul + hl + 2] = '\0';    /* empty text and text_host until the anchor ends */
    if (h->n_links == h->links_alloc) {
        h->links_alloc = h->links_alloc ? h->links_alloc * 2 : 16;
        h->links = osp_reallocarray(h->links, h->links_alloc, sizeof(*h->links));
    }
    l = &h->links[h->n_links++];
    l->url = url;
    l->host = mem + ul + 1;
    l->text = mem + ul + hl + 2;
    l->text_host = l->text;
    l->kind = kind;
    l->flags = fl | (c->invisible ? OSP_HTML_LINK_HIDDEN : 0);
    return l;
}

/* Close the open <a>: store its anchor text and compare hosts. */
static void link_close(struct conv *c)
{
    osp_html_link_t *l;
    char host[OSP_URL_HOST_BUFSIZE];
    unsigned fl;
    size_t ul, hl, tl, thl = 0;
    char *mem;

    if (c->link < 0)
        return;
    l = &c->h->links[c->link];
    c->link = -1;
    if (c->anchor.len == 0)
        return;
    host[0] = '\0';
    if (!memchr(c->anchor.data, ' ', c->anchor.len)) {
        if (osp_url_normalize(c->anchor.data, c->anchor.len, OSP_URL_NORM_BARE, &c->url, host, &fl) == 0)
            thl = strlen(host);
        else
            host[0] = '\0';
    }
    /* Rebuild the link's block with the text: url, host, text, text_host. */
    ul = strlen(l->url);
    hl = strlen(l->host);
    tl = c->anchor.len;
    mem = osp_malloc(ul + hl + tl + thl + 4);
    memcpy(mem, l->url, ul + 1);
    memcpy(mem + ul + 1, l->host, hl + 1);
    memcpy(mem + ul + hl + 2, c->anchor.data, tl);
    mem[ul + hl + 2 + tl] = '\0';
    memcpy(mem + ul + hl + tl + 3, host, thl + 1);
    free((char *)l->url);
    l->url = mem;
    l->host = mem + ul + 1;
    l->text = mem + ul + hl + 2;
    l->text_host = mem + ul + hl + tl + 3;
    if (thl > 0 && hl > 0 && !osp_url_same_site(l->host, l->text_host))
        l->flags |= OSP_HTML_LINK_MISMATCH;
}

/* ---- Tag contents ------------------------------------------------------ */

enum attr_id {
    A_STYLE, A_COLOR, A_BGCOLOR, A_TEXT, A_HIDDEN, A_HREF, A_SRC, A_ACTION,
    A_BACKGROUND, A_CLASS, A_HTTP_EQUIV, A_CONTENT, A_COUNT
};

struct tag {
    char name[TAG_NAME_MAX + 1];
    enum tag_id id;
    unsigned key;       /* as struct elem's */
    unsigned props;
    bool selfclose;
    const char *v[A_COUNT];
    size_t l[A_COUNT];
    bool has[A_COUNT];
};

static int attr_lookup(const char *s, size_t n)
{
    char a[12];
    size_t i;

    if (n < 3 || n > 10)
        return -1;
    for (i = 0; i < n; i++)
        a[i] = (char)lower((unsigned char)s[i]);
#define IS(lit) (memcmp(a, lit, n) == 0)
    switch (n) {
    case 3:
        return IS("src") ? A_SRC : -1;
    case 4:
        return IS("href") ? A_HREF : IS("text") ? A_TEXT : -1;
    case 5:
        return IS("style") ? A_STYLE : IS("color") ? A_COLOR : IS("class") ? A_CLASS : -1;
    case 6:
        return IS("hidden") ? A_HIDDEN : IS("action") ? A_ACTION : -1;
    case 7:
        return IS("bgcolor") ? A_BGCOLOR : IS("content") ? A_CONTENT : -1;
    case 10:
        return IS("background") ? A_BACKGROUND : IS("http-equiv") ? A_HTTP_EQUIV : -1;
    default:
        return -1;
    }
#undef IS
}

/*
 * Parse a start or end tag whose name starts at s[i] (after "<" or "</").
 * Returns the index after '>', or 0 if the tag is unterminated (then the
 * rest of the input is the tag, as in HTML5, and t must be ignored).
 */
static size_t tag_parse(const char *s, size_t n, size_t i, struct tag *t)
{
    size_t k = 0;

    while (i < n && !is_space((unsigned char)s[i]) && s[i] != '/' && s[i] != '>') {
        if (k < TAG_NAME_MAX + 1)
            t->name[k++] = (char)lower((unsigned char)s[i]);
        i++;
    }
    if (k > TAG_NAME_MAX) {
        t->name[0] = '?';   /* too long to be one we know or match */
        k = 1;
    }
    t->name[k] = '\0';
    t->id = tag_lookup(t->name);
    t->key = t->id != T_OTHER ? t->id : T_COUNT + tag_hash(t->name) % OTHER_BUCKETS;
    t->props = tag_infos[t->id].props;
    for (;;) {
        size_t ns, nl;
        const char *v = NULL;
        size_t vl = 0;
        int id;

        while (i < n && (is_space((unsigned char)s[i]) || s[i] == '/')) {
            t->selfclose = s[i] == '/';
            i++;
        }
        if (i >= n)
            return 0;
        if (s[i] == '>')
            return i + 1;
        t->selfclose = false;
        ns = i++;
        while (i < n && !is_space((unsigned char)s[i]) && s[i] != '/' && s[i] != '>' && s[i] != '=')
            i++;
        nl = i - ns;
        while (i < n && is_space((unsigned char)s[i]))
            i++;
        if (i < n && s[i] == '=') {
            i++;
            while (i < n && is_space((unsigned char)s[i]))
                i++;
            if (i < n && (s[i] == '"' || s[i] == '\'')) {
                const char *q = memchr(s + i + 1, s[i], n - i - 1);

                if (q == NULL)
                    return 0;
                v = s + i + 1;
                vl = (size_t)(q - v);
                i = (size_t)(q - s) + 1;
            } else {
                v = s + i;
                while (i < n && !is_space((unsigned char)s[i]) && s[i] != '>')
                    i++;
                vl = (size_t)(s + i - v);
            }
        }
        id = attr_lookup(s + ns, nl);
        if (id >= 0 && !t->has[id]) {
            t->has[id] = true;
            t->v[id] = v ? v : "";
            t->l[id] = vl;
        }
    }
}

/* Is the open element e the one tag t closes? */
static bool elem_is(const struct elem *e, const struct tag *t)
{
    return e->key == t->key && (t->id != T_OTHER || strcmp(e->name, t->name) == 0);
}

/*
 * The depth (1-based) of the innermost open element that t closes, 0 if
 * none.  With scoped, a scope element (table, ul, div, ...) ends the
 * search.  Nothing is searched when no such element is open, and never
 * more than SEARCH_MAX elements, so every tag costs O(1): a closing tag
 * for an element deeper than that is ignored.
 */
static size_t stack_find(const struct conv *c, const struct tag *t, bool scoped)
{
    size_t d, lo;

    if (c->open[t->key] == 0)
        return 0;
    lo = c->depth > SEARCH_MAX ? c->depth - SEARCH_MAX : 0;
    for (d = c->depth; d > lo; d--) {
        if (elem_is(&c->stack[d - 1], t))
            return d;
        if (scoped && (tag_infos[c->stack[d - 1].id].props & P_SCOPE))
            return 0;
    }
    return 0;
}

static bool class_hidden(const osp_html_t *h, const char *v, size_t n)
{
    size_t i = 0, k;

    if (h->n_hidden_classes == 0)
        return false;
    while (i < n) {
        size_t j;

        while (i < n && is_space((unsigned char)v[i]))
            i++;
        j = i;
        while (j < n && !is_space((unsigned char)v[j]))
            j++;
        for (k = 0; j > i && k < h->n_hidden_classes; k++)
            if (strlen(h->hidden_classes[k]) == j - i && memcmp(h->hidden_classes[k], v + i, j - i) == 0)
                return true;
        i = j;
    }
    return false;
}

/* The URL in <meta http-equiv=refresh content="5; url=http://...">. */
static void meta_refresh(struct conv *c, const char *v, size_t n)
{
    size_t i;

    for (i = 0; i + 3 < n; i++) {
        if (lower((unsigned char)v[i]) == 'u' && lower((unsigned char)v[i + 1]) == 'r'
            && lower((unsigned char)v[i + 2]) == 'l') {
            i += 3;
            while (i < n && is_space((unsigned char)v[i]))
                i++;
            if (i < n && v[i] == '=') {
                i++;
                while (i < n && (is_space((unsigned char)v[i]) || v[i] == '\'' || v[i] == '"'))
                    i++;
                while (n > i && (v[n - 1] == '\'' || v[n - 1] == '"' || is_space((unsigned char)v[n - 1])))
                    n--;
                (void)link_add(c, OSP_HTML_LINK_REFRESH, v + i, n - i);
            }
            return;
        }
    }
}

/* A legacy colour attribute of t into *rgb. */
static bool attr_color(const struct tag *t, enum attr_id id, int *rgb)
{
    char v[16];
    size_t n, i;

    n = t->l[id] < sizeof(v) ? t->l[id] : sizeof(v);
    for (i = 0; i < n; i++)
        v[i] = (char)lower((unsigned char)t->v[id][i]);
    while (n > 0 && is_space((unsigned char)v[n - 1]))
        n--;
    return parse_color(v, n, rgb) == COLOR_RGB;
}

/* Apply the attributes of a start tag to the element e (already inherited). */
static void elem_apply(struct conv *c, struct elem *e, const struct tag *t)
{
    int rgb;

    if (t->has[A_HIDDEN])
        e->hidden = true;
    if (t->has[A_CLASS] && class_hidden(c->h, t->v[A_CLASS], t->l[A_CLASS]))
        e->hidden = true;
    if (t->has[A_BGCOLOR] && attr_color(t, A_BGCOLOR, &rgb))
        e->bg = rgb;
    if (t->has[A_COLOR] && t->id == T_FONT && attr_color(t, A_COLOR, &rgb))
        e->fg = rgb;
    if (t->has[A_TEXT] && t->id == T_BODY && attr_color(t, A_TEXT, &rgb))
        e->fg = rgb;
    if (t->has[A_STYLE]) {
        struct style st = { false, -1, -1, -1 };

        style_parse(t->v[A_STYLE], t->l[A_STYLE], &st);
        if (st.hide)
            e->hidden = true;
        if (st.tiny >= 0)
            e->tiny = st.tiny == 1;
        if (st.fg >= 0)
            e->fg = st.fg;
        if (st.bg >= 0)
            e->bg = st.bg;
    }
}

static void stack_pop_to(struct conv *c, size_t d)
{
    while (c->depth > d) {
        c->depth--;
        c->open[c->stack[c->depth].key]--;
        if (c->stack[c->depth].id == T_A)
            link_close(c);
    }
}

static void start_tag(struct conv *c, const struct tag *t)
{
    unsigned props = t->props;
    struct elem e;
    size_t d;

    if ((props & P_SIBLING) && (d = stack_find(c, t, true)) > 0)
        stack_pop_to(c, d - 1);
    if (t->id == T_A) {
        if ((d = stack_find(c, t, false)) > 0)
            stack_pop_to(c, d - 1);
        link_close(c);
    }
    e = *top(c);
    e.id = t->id;
    e.key = t->key;
    memcpy(e.name, t->name, sizeof(e.name));
    elem_apply(c, &e, t);
    if (props & P_PRE)
        e.pre = true;

    /* Links take the visibility of the element they are on. */
    {
        bool saved = c->invisible;

        c->invisible = e.hidden || e.tiny || colors_close(e.fg, e.bg);
        if ((t->id == T_A || t->id == T_AREA) && t->has[A_HREF]) {
            osp_html_link_t *l = link_add(c, OSP_HTML_LINK_A, t->v[A_HREF], t->l[A_HREF]);

            if (l && t->id == T_A) {
                c->link = (long)(l - c->h->links);
                osp_buf_reset(&c->anchor);
                c->anchor.max = c->h->limits.max_anchor_text;
                c->anchor_space = false;
            }
        } else if (t->id == T_FORM && t->has[A_ACTION]) {
            (void)link_add(c, OSP_HTML_LINK_FORM, t->v[A_ACTION], t->l[A_ACTION]);
        } else if (t->id == T_META && t->has[A_HTTP_EQUIV] && t->has[A_CONTENT]
                   && t->l[A_HTTP_EQUIV] == 7 && strncasecmp(t->v[A_HTTP_EQUIV], "refresh", 7) == 0) {
            meta_refresh(c, t->v[A_CONTENT], t->l[A_CONTENT]);
        }
        if ((props & P_SRC) && t->has[A_SRC])
            (void)link_add(c, OSP_HTML_LINK_SRC, t->v[A_SRC], t->l[A_SRC]);
        if (t->has[A_BACKGROUND])
            (void)link_add(c, OSP_HTML_LINK_SRC, t->v[A_BACKGROUND], t->l[A_BACKGROUND]);
        c->invisible = saved;
    }

    if (t->id == T_BR || t->id == T_HR || (props & P_BLOCK))
        put_break(c);
    else if (props & P_SPACE)
        put_space(c);
    if ((props & P_VOID) || t->selfclose)
        return;
    if (c->depth >= c->h->limits.max_depth) {
        c->overflow++;
        c->h->flags |= OSP_HTML_F_DEPTH;
        return;
    }
    c->stack[c->depth++] = e;
    c->open[e.key]++;
    update_state(c);
}

static void end_tag(struct conv *c, const struct tag *t)
{
    size_t d;

    if (t->id == T_BR) {
        put_break(c);   /* "</br>" is "<br>" */
        return;
    }
    if ((d = stack_find(c, t, false)) > 0) {
        stack_pop_to(c, d - 1);
        update_state(c);
    } else {
        if (c->overflow > 0)
            c->overflow--;
        if (t->id == T_A)
            link_close(c);
    }
    if (t->props & P_BLOCK)
        put_break(c);
    else if (t->props & P_SPACE)
        put_space(c);
}

/* ---- <style> contents ---------------------------------------------------- */

static void hidden_class_add(osp_html_t *h, const char *s, size_t n)
{
    size_t k;

    if (n == 0 || n > MAX_CLASS_LEN || h->n_hidden_classes >= MAX_HIDDEN_CLASSES)
        return;
    for (k = 0; k < h->n_hidden_classes; k++)
        if (strlen(h->hidden_classes[k]) == n && memcmp(h->hidden_classes[k], s, n) == 0)
            return;
    if (h->hidden_classes == NULL)
        h->hidden_classes = osp_calloc(MAX_HIDDEN_CLASSES, sizeof(char *));
    h->hidden_classes[h->n_hidden_classes++] = osp_memdup0(s, n);
}

/* The class of the last compound selector of sel, e.g. "p .x" -> "x". */
static void selector_class(osp_html_t *h, const char *sel, size_t n)
{
    size_t e, b;

    while (n > 0 && is_space((unsigned char)sel[n - 1]))
        n--;
    e = n;
    b = e;
    while (b > 0 && (is_alnum((unsigned char)sel[b - 1]) || sel[b - 1] == '-' || sel[b - 1] == '_'))
        b--;
    if (b > 0 && sel[b - 1] == '.' && b < e)
        hidden_class_add(h, sel + b, e - b);
}

/* Find the class rules in a style sheet that hide their elements. */
static void css_scan(osp_html_t *h, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        const char *ob, *cb;
        size_t sel, j;

        while (i < n && (is_space((unsigned char)s[i]) || s[i] == '}'))
            i++;
        if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
            const char *end = memmem(s + i + 2, n - i - 2, "*/", 2);

            i = end ? (size_t)(end - s) + 2 : n;
            continue;
        }
        if (i >= n)
            break;
        if (s[i] == '@') {
            int depth = 0;

            /* Skip the at-rule: to ';' or over its balanced block. */
            for (; i < n; i++) {
                if (s[i] == ';' && depth == 0) {
                    i++;
                    break;
                }
                if (s[i] == '{')
                    depth++;
                if (s[i] == '}' && --depth <= 0) {
                    i++;
                    break;
                }
            }
            continue;
        }
        sel = i;
        ob = memchr(s + i, '{', n - i);
        if (ob == NULL)
            break;
        cb = memchr(ob, '}', (size_t)(s + n - ob));
        if (cb == NULL)
            cb = s + n;
        {
            struct style st = { false, -1, -1, -1 };

            style_parse(ob + 1, (size_t)(cb - ob - 1), &st);
            if (st.hide || st.tiny == 1) {
                size_t a = sel;

                for (j = sel; j <= (size_t)(ob - s); j++) {
                    if (j == (size_t)(ob - s) || s[j] == ',') {
                        selector_class(h, s + a, j - a);
                        a = j + 1;
                    }
                }
            }
        }
        i = (size_t)(cb - s) + 1;
    }
}

/* ---- The converter ------------------------------------------------------- */

/* Index of "</name" closing a raw-text element, from i; n if none. */
static size_t find_end_tag(const char *s, size_t n, size_t i, const char *name)
{
    size_t nl = strlen(name);

    while (i < n) {
        const char *lt = memchr(s + i, '<', n - i);
        size_t k;

        if (lt == NULL)
            return n;
        k = (size_t)(lt - s);
        if (k + 2 + nl <= n && s[k + 1] == '/' && strncasecmp(s + k + 2, name, nl) == 0
            && (k + 2 + nl == n || is_space((unsigned char)s[k + 2 + nl])
                || s[k + 2 + nl] == '>' || s[k + 2 + nl] == '/'))
            return k;
        i = k + 1;
    }
    return n;
}

/* After "<!" or "<?" at i: the index after the comment or declaration. */
static size_t skip_markup_decl(const char *s, size_t n, size_t i)
{
    const char *gt;

    if (i + 4 <= n && memcmp(s + i, "<!--", 4) == 0) {
        size_t k = i + 4;

        /* "<!-->" and "<!--->" are empty comments. */
        if (k < n && s[k] == '>')
            return k + 1;
        if (k + 1 < n && s[k] == '-' && s[k + 1] == '>')
            return k + 2;
        /* Otherwise it ends at "-->" (or "--->", "--!>"). */
        for (;;) {
            const char *dd = memmem(s + k, n - k, "--", 2);

            if (dd == NULL)
                return n;
            k = (size_t)(dd - s) + 2;
            while (k < n && s[k] == '-')
                k++;
            if (k < n && s[k] == '>')
                return k + 1;
            if (k + 1 < n && s[k] == '!' && s[k + 1] == '>')
                return k + 2;
        }
    }
    gt = memchr(s + i, '>', n - i);
    return gt ? (size_t)(gt - s) + 1 : n;
}

void osp_html_init(osp_html_t *h, const osp_html_limits_t *limits)
{
    tag_slots_init();
    memset(h, 0, sizeof(*h));
    if (limits)
        h->limits = *limits;
    if (h->limits.max_links == 0)
        h->limits.max_links = DEF_MAX_LINKS;
    if (h->limits.max_invisible == 0)
        h->limits.max_invisible = DEF_MAX_INVISIBLE;
    if (h->limits.max_depth == 0)
        h->limits.max_depth = DEF_MAX_DEPTH;
    if (h->limits.max_anchor_text == 0)
        h->limits.max_anchor_text = DEF_MAX_ANCHOR;
    osp_buf_init(&h->invisible, h->limits.max_invisible);
}

static void hidden_classes_free(osp_html_t *h)
{
    size_t k;

    for (k = 0; k < h->n_hidden_classes; k++)
        free(h->hidden_classes[k]);
    h->n_hidden_classes = 0;
}

void osp_html_close(osp_html_t *h)
{
    size_t i;

    for (i = 0; i < h->n_links; i++)
        free((char *)h->links[i].url);  /* each link is one block from url */
    free(h->links);
    hidden_classes_free(h);
    free(h->hidden_classes);
    osp_buf_close(&h->invisible);
    memset(h, 0, sizeof(*h));
}

void osp_html_convert(osp_html_t *h, const char *s, size_t n, osp_buf_t *text)
{
    struct conv c;
    size_t i = 0;

    memset(&c, 0, sizeof(c));
    c.h = h;
    c.text = text;
    c.vis_nl = text->len > 0;
    c.link = -1;
    c.root.fg = BLACK;
    c.root.bg = WHITE;
    c.stack = osp_malloc(h->limits.max_depth * sizeof(*c.stack));
    osp_buf_init(&c.anchor, h->limits.max_anchor_text);
    osp_buf_init(&c.tmp, 8192);
    osp_buf_init(&c.url, OSP_URL_MAX + 16);
    hidden_classes_free(h);     /* style sheets belong to one document */
    update_state(&c);

    while (i < n) {
        const char *lt = memchr(s + i, '<', n - i);
        size_t k = lt ? (size_t)(lt - s) : n;
        struct tag t;

        if (k > i)
            text_run(&c, s + i, k - i);
        if (lt == NULL)
            break;
        i = k;
        if (i + 1 >= n) {
            text_run(&c, "<", 1);
            break;
        }
        if (s[i + 1] == '!' || s[i + 1] == '?') {
            i = skip_markup_decl(s, n, i);
            continue;
        }
        if (s[i + 1] == '/' && i + 2 < n && is_alpha((unsigned char)s[i + 2])) {
            memset(&t, 0, sizeof(t));
            i = tag_parse(s, n, i + 2, &t);
            if (i == 0)
                break;  /* unterminated: dropped */
            end_tag(&c, &t);
            continue;
        }
        if (s[i + 1] == '/') {
            /* "</>" is ignored, "</ x>" is a bogus comment. */
            const char *gt = memchr(s + i, '>', n - i);

            i = gt ? (size_t)(gt - s) + 1 : n;
            continue;
        }
        if (!is_alpha((unsigned char)s[i + 1])) {
            text_run(&c, "<", 1);
            i++;
            continue;
        }
        memset(&t, 0, sizeof(t));
        i = tag_parse(s, n, i + 1, &t);
        if (i == 0)
            break;      /* unterminated: dropped */
        if (t.props & P_RAWTEXT) {
            /* Contents up to the matching end tag are not markup. */
            size_t e = find_end_tag(s, n, i, t.name);
            const char *gt;

            if (t.id == T_STYLE) {
                css_scan(h, s + i, e - i);
            } else if (t.id == T_SCRIPT) {
                if (t.has[A_SRC])
                    (void)link_add(&c, OSP_HTML_LINK_SRC, t.v[A_SRC], t.l[A_SRC]);
            } else if (t.props & P_TEXT) {
                start_tag(&c, &t);
                if (t.id == T_XMP)
                    out_text(&c, s + i, e - i);
                else
                    text_run(&c, s + i, e - i);
                end_tag(&c, &t);
            }
            if (e == n)
                break;
            gt = memchr(s + e, '>', n - e);
            i = gt ? (size_t)(gt - s) + 1 : n;
            continue;
        }
        start_tag(&c, &t);
    }
    link_close(&c);
    free(c.stack);
    osp_buf_close(&c.anchor);
    osp_buf_close(&c.tmp);
    osp_buf_close(&c.url);
}
