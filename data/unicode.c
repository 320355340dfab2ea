/* unicode.c - what the byte-level BPE pre-tokenizer needs from Unicode: UTF-8
 * decoding that never fails (a bad byte is one "other" character), letter /
 * number / white-space classes from generated range tables, GPT-2's
 * byte <-> printable-character map, and the GPT-2 split pattern written out by
 * hand so that no regex library is needed:
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 */
#include "data.h"

#include "unicode_tables.h"

/* ---- UTF-8 -------------------------------------------------------------- */

int vlm_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp) {
    uint8_t b = s[0];
    *cp = VLM_UTF8_INVALID;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    /* Length and the smallest code point that may use it (shortest form). */
    int n;
    uint32_t c, min;
    if (b >= 0xC2 && b <= 0xDF)
        n = 2, c = b & 0x1F, min = 0x80;
    else if (b >= 0xE0 && b <= 0xEF)
        n = 3, c = b & 0x0F, min = 0x800;
    else if (b >= 0xF0 && b <= 0xF4)
        n = 4, c = b & 0x07, min = 0x10000;
    else
        return 1; /* continuation byte, C0/C1 overlong lead, F5..FF */
    if (len < (size_t)n) return 1;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 1;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 1;
    *cp = c;
    return n;
}

/* ---- character classes -------------------------------------------------- */

static int ascii_class(uint8_t c) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return VLM_UC_LETTER;
    if (c >= '0' && c <= '9') return VLM_UC_NUMBER;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return VLM_UC_SPACE;
    return VLM_UC_OTHER;
}

int vlm_unicode_class(uint32_t cp) {
    if (cp < 128) return ascii_class((uint8_t)cp);
    size_t lo = 0, hi = sizeof vlm_uc_ranges / sizeof vlm_uc_ranges[0];
    while (lo < hi) { /* first range with hi >= cp */
        size_t mid = (lo + hi) / 2;
        if (vlm_uc_ranges[mid].hi < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < sizeof vlm_uc_ranges / sizeof vlm_uc_ranges[0] && vlm_uc_ranges[lo].lo <= cp)
        return vlm_uc_ranges[lo].cls;
    return VLM_UC_OTHER; /* also VLM_UTF8_INVALID */
}

const char *vlm_unicode_version(void) { return VLM_UNICODE_VERSION; }

/* ---- GPT-2 byte map ------------------------------------------------------ */

/* Printable bytes map to themselves; the other 68 (controls, space, DEL,
 * 0x80-0xA0, soft hyphen 0xAD) map in byte order to U+0100, U+0101, ... */
static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t vlm_byte_to_unicode(uint8_t b) {
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 0x100 + b; /* 33 controls and space */
    if (b == 0x7F) return 0x100 + 33;
    if (b <= 0xA0) return 0x100 + 34 + (b - 0x80); /* 0x80..0xA0 */
    return 0x100 + 67;                             /* 0xAD */
}

int vlm_unicode_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t n = cp - 0x100;
    if (n <= 32) return (int)n;
    if (n == 33) return 0x7F;
    if (n <= 66) return (int)(0x80 + n - 34);
    return n == 67 ? 0xAD : -1;
}

/* ---- the GPT-2 split ------------------------------------------------------ */

typedef struct {
    int cls;
    int len; /* bytes */
} uchar;

static uchar char_at(const uint8_t *s, size_t len, size_t pos) {
    uchar c;
    if (s[pos] < 0x80) {
        c.cls = ascii_class(s[pos]);
        c.len = 1;
        return c;
    }
    uint32_t cp;
    c.len = vlm_utf8_decode(s + pos, len - pos, &cp);
    c.cls = vlm_unicode_class(cp);
    return c;
}

/* End of the run of characters of class cls starting at pos. */
static size_t run_end(const uint8_t *s, size_t len, size_t pos, int cls) {
    while (pos < len) {
        uchar c = char_at(s, len, pos);
        if (c.cls != cls) break;
        pos += (size_t)c.len;
    }
    return pos;
}

/* 's 't 're 've 'm 'll 'd (lower case only, like the pattern): the length of
 * the contraction at pos, or 0. */
static size_t contraction(const uint8_t *s, size_t len, size_t pos) {
    if (s[pos] != '\'' || pos + 1 >= len) return 0;
    uint8_t a = s[pos + 1], b = pos + 2 < len ? s[pos + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* The alternatives in pattern order. A match always exists and starts at pos
 * (every character is a letter, a number, white space or "other"), so the
 * pieces tile the text. */
size_t vlm_gpt2_split(const char *text, size_t len, size_t pos) {
    const uint8_t *s = (const uint8_t *)text;
    size_t k = contraction(s, len, pos);
    if (k) return pos + k;
    /* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a
     * run of one class. Invalid UTF-8 bytes are "other". */
    size_t p = pos;
    uchar c = char_at(s, len, p);
    if (s[p] == ' ' && p + 1 < len) {
        uchar d = char_at(s, len, p + 1);
        if (d.cls != VLM_UC_SPACE) p++, c = d;
    }
    if (c.cls != VLM_UC_SPACE) return run_end(s, len, p, c.cls);
    /* `\s+(?!\S)` then `\s+`: a white-space run that reaches the end is taken
     * whole; otherwise it leaves its last character for the next piece (which
     * then becomes " word" when that character is a space), unless the run is
     * a single character, which `\s+` takes. */
    size_t last = pos, end = pos;
    while (end < len) {
        uchar d = char_at(s, len, end);
        if (d.cls != VLM_UC_SPACE) break;
        last = end;
        end += (size_t)d.len;
    }
    if (end == len || last == pos) return end;
    return last;
}
