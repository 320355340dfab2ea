#!/usr/bin/python3
"""Writes the byte-level BPE parity fixtures under tests/data/fixtures/bpe/:

  corpus.txt           the training texts (one per line)
  tokenizer.json       a tokenizer trained here on corpus.txt, merges as "a b"
  tokenizer_pairs.json the same with merges as ["a", "b"] pairs
  cases.json           test sentences and their expected ids, for the plain
                       ByteLevel pre-tokenizer and a few variants (each with the
                       pre_tokenizer JSON to substitute)

    /usr/bin/python3 scripts/gen_bpe_fixtures.py     (needs python3-regex)

Developer-only; CI never runs Python. Python's `tokenizers` is not available
here, so this is an independent reference written from the published
algorithms: GPT-2's encoder.py (the `regex` split pattern, bytes_to_unicode,
bpe() that merges every occurrence of the best-ranked bigram) and HF tokenizers'
added-token rules (leftmost-longest, normalized=false tokens first, lstrip /
rstrip) and pre-tokenizers (Digits, ByteLevel add_prefix_space on every piece).
The trainer follows the rules documented in data/data.h (most frequent pair,
ties to the smallest (left id, right id), a merged string that already exists
keeps its id), recounting every pair at every step: slow and obviously right.
"""
import json
import os
import random
import unicodedata

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "fixtures", "bpe")

PAT_TEXT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT = regex.compile(PAT_TEXT)
SPECIALS = ["<pad>", "<bos>", "<eos>"]
VOCAB_SIZE = 3 + 256 + 420
MIN_FREQUENCY = 2


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHAR = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def mapped(s):
    return "".join(BYTE_CHAR[b] for b in s.encode("utf-8"))


# ---- training --------------------------------------------------------------

def train(texts, vocab_size, specials, min_frequency):
    tok = list(specials) + sorted(BYTE_CHAR.values(), key=ord)
    ids = {t: i for i, t in enumerate(tok)}
    words = {}
    for t in texts:
        for piece in PAT.findall(t):
            w = tuple(ids[c] for c in mapped(piece))
            words[w] = words.get(w, 0) + 1
    merges = []
    while len(tok) < vocab_size:
        counts = {}
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + c
        if not counts:
            break
        (a, b), best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if best < max(1, min_frequency):
            break
        s = tok[a] + tok[b]
        if s not in ids:
            ids[s] = len(tok)
            tok.append(s)
        new = ids[s]
        merges.append((tok[a], tok[b]))
        merged = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
    return tok, merges


# ---- reference encoder -------------------------------------------------------

class Reference:
    def __init__(self, tok, merges, added):
        self.vocab = {t: i for i, t in enumerate(tok)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.added = added  # dicts as in tokenizer.json
        self.cache = {}

    def bpe(self, token):
        """GPT-2 encoder.py: merge every occurrence of the best bigram, repeat."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        self.cache[token] = word
        return word

    def pre_pieces(self, text, variant):
        """Pieces before ByteLevel's own split, per variant."""
        if variant in ("digits", "digit_runs"):
            pat = r"\p{N}" if variant == "digits" else r"\p{N}+"
            out, pos = [], 0
            for m in regex.finditer(pat, text):
                if m.start() > pos:
                    out.append(text[pos:m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(text):
                out.append(text[pos:])
            return out
        return [text]

    def encode_segment(self, text, variant):
        ids = []
        for piece in self.pre_pieces(text, variant):
            if variant == "prefix" and not piece.startswith(" "):
                piece = " " + piece
            for word in PAT.findall(piece):
                ids.extend(self.vocab[t] for t in self.bpe(mapped(word)))
        return ids

    def split_added(self, text, tokens):
        """HF find_matches: leftmost-longest, then lstrip / rstrip."""
        out, start, pos = [], 0, 0
        while pos < len(text):
            hits = [t for t in tokens if text.startswith(t["content"], pos)]
            if not hits:
                pos += 1
                continue
            t = max(hits, key=lambda t: len(t["content"]))
            s, e = pos, pos + len(t["content"])
            if t["lstrip"]:
                while s > start and text[s - 1].isspace() and not 0x1C <= ord(text[s - 1]) <= 0x1F:
                    s -= 1
            if t["rstrip"]:
                while e < len(text) and text[e].isspace() and not 0x1C <= ord(text[e]) <= 0x1F:
                    e += 1
            if s > start:
                out.append(text[start:s])
            out.append(t)
            start = pos = e
        if start < len(text):
            out.append(text[start:])
        return out

    def encode(self, text, variant="base"):
        ids = []
        first = [t for t in self.added if not t["normalized"]]
        second = [t for t in self.added if t["normalized"]]
        for part in self.split_added(text, first):
            if isinstance(part, dict):
                ids.append(part["id"])
                continue
            for sub in self.split_added(part, second):
                ids.extend([sub["id"]] if isinstance(sub, dict) else self.encode_segment(sub, variant))
        return ids

    def decode(self, ids):
        by_id = {t["id"]: t["content"].encode("utf-8") for t in self.added}
        inv = {i: t for t, i in self.vocab.items()}
        return b"".join(by_id[i] if i in by_id else bytes(CHAR_BYTE[c] for c in inv[i]) for i in ids)


# ---- texts ----------------------------------------------------------------------

WORDS = ("a the small large tiny big red blue green yellow purple orange white black dark "
         "light circle square triangle star hexagon dog cat bird horse man woman child "
         "people standing sitting running on in under next to near with of and is are "
         "holding riding street table picture photo shirt water field grass sky tree").split()
ACCENTED = "café naïve résumé über straße façade piñata crème brûlée jalapeño Ærø Zürich".split()
FOREIGN = ["日本語のテキスト", "猫が座っている", "一只小狗", "한국어 문장", "Привет мир",
           "Ελληνικά γράμματα", "שלום עולם", "مرحبا بالعالم", "हिन्दी पाठ", "ภาษาไทย"]
EMOJI = ["🙂", "🚀🚀", "👍🏽", "👩‍👩‍👧", "🇫🇷", "❤️", "✨"]
PUNCT = [".", ",", "!", "?", "...", "!?", ";", ":", "-", "--", "(", ")", "\"", "'", "…", "«", "»", "—"]
NUMBERS = ["0", "7", "42", "123", "2024", "3.14", "1,000", "10%", "½", "²", "Ⅻ", "٣٤", "१२"]
SPACES = [" ", "  ", "   ", "\t", "\n", " \n", "\n\n", "\u00a0", "\u3000", " \t "]


def random_text(rng):
    parts = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.55:
            w = rng.choice(WORDS)
            parts.append(w.capitalize() if rng.random() < 0.15 else w)
        elif r < 0.65:
            parts.append(rng.choice(ACCENTED))
        elif r < 0.72:
            parts.append(rng.choice(FOREIGN))
        elif r < 0.78:
            parts.append(rng.choice(EMOJI))
        elif r < 0.88:
            parts.append(rng.choice(NUMBERS))
        else:
            parts.append(rng.choice(PUNCT))
    out = ""
    for i, p in enumerate(parts):
        if i:
            out += " " if rng.random() < 0.8 else rng.choice(SPACES)
        out += p
        if rng.random() < 0.1:
            out += rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'"])
    if rng.random() < 0.1:
        out = rng.choice(SPACES) + out
    if rng.random() < 0.1:
        out += rng.choice(SPACES)
    return out


HANDWRITTEN = [
    "Hello world's 123  x",
    "Hello world",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "multiple     spaces inside",
    "tabs\tand\t\ttabs",
    "new\nline",
    "lines\n\n\nmany",
    "\n",
    " ",
    "   ",
    "\t",
    "a",
    "I'm sure it's what they'll do, isn't it? We've, you'd, they're.",
    "SHOUTING'S NOT CONTRACTED'LL",
    "quotes 'single' and \"double\"",
    "apostrophe at end'",
    "''s and '''",
    "numbers 1 22 333 4444 55555 666666",
    "3.14159 and 2,718 and 1e10 and 0x1F",
    "phone +1 (555) 123-4567",
    "dates 2024-05-17 12:30:00",
    "fractions ½ ¾ and superscripts x² y³",
    "roman Ⅻ and Ⅳ",
    "arabic digits ٠١٢٣٤٥٦٧٨٩ and devanagari १२३",
    "café naïve résumé über",
    "Straße Façade Ærø",
    "Zürich and São Paulo",
    "combining e\u0301 and a\u0308",
    "日本語のテキストです。",
    "中文句子，有标点。",
    "한국어 문장입니다",
    "Привет, мир!",
    "Ελληνικά γράμματα",
    "שלום עולם",
    "مرحبا بالعالم",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "emoji 🙂 and 🚀🚀 and 👍🏽",
    "family 👩‍👩‍👧 flag 🇫🇷 heart ❤️",
    "math ∑ ∫ √ ≠ ≤ ≥ ∞",
    "currency $5 €10 £3 ¥100",
    "nbsp\u00a0here and ideographic\u3000space",
    "line\u2028separator and para\u2029graph",
    "zero\u200bwidth space",
    "soft\u00adhyphen",
    "control \x01 chars \x7f del",
    "info sep \x1c\x1d\x1e\x1f",
    "...!!!???",
    "--- ___ ***",
    "a.b.c",
    "end.",
    "email user@example.com url https://example.com/a?b=c",
    "snake_case and camelCase and kebab-case",
    "C++ and C# and F#",
    "<bos>a small red circle<eos>",
    "<pad><pad><pad>",
    "text<eos>more text",
    "<bos> spaced <eos>",
    "a <mask> token",
    "a<mask>token",
    "several   <mask>   spaces",
    "user:<|user|>hello",
    "<a><b> is longest, <a> alone, <a><a><b>",
    "sep<sep>   after",
    "sep <sep>\tafter",
    "not special: <bos but <eos",
    "<bos><eos><pad>",
    "tokens inside wo<eos>rds",
    "a small red circle left of a large blue square",
    "two dogs playing with a ball in the grass",
    "A man riding a horse on a dirt road.",
    "A WOMAN HOLDING AN UMBRELLA",
]

ADDED = [
    # id filled in below; the first three are the trained specials
    {"content": "<pad>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    {"content": "<bos>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    {"content": "<eos>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    {"content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": False, "special": True},
    {"content": "<|user|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False},
    {"content": "<a>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
    {"content": "<a><b>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
    {"content": "<sep>", "single_word": False, "lstrip": False, "rstrip": True, "normalized": True, "special": False},
]

VARIANTS = {
    "base": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "prefix": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "digits": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
    "digit_runs": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
}


def check_classes(texts):
    """Every character must classify the same under unicodedata (the C tables)
    and `regex` (whose Unicode is newer), or the fixture would test versions."""
    for t in texts:
        for c in t:
            cat = unicodedata.category(c)
            ws = c.isspace() and not 0x1C <= ord(c) <= 0x1F
            assert (cat[0] == "L") == bool(regex.match(r"\p{L}", c)), (t, c)
            assert (cat[0] == "N") == bool(regex.match(r"\p{N}", c)), (t, c)
            assert ws == bool(regex.match(r"\s", c)), (t, c)


def tokenizer_json(tok, merges, added, pair_merges):
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": VARIANTS["base"], "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tok)},
            "merges": [[a, b] for a, b in merges] if pair_merges else [a + " " + b for a, b in merges],
        },
    }


def write_json(name, obj, indent=None):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20240517)
    corpus = [random_text(rng).replace("\n", " ") for _ in range(600)] + \
             [t.replace("\n", " ") for t in HANDWRITTEN[20:45]]
    corpus = [t for t in corpus if t.strip()]
    sentences = HANDWRITTEN + [random_text(rng) for _ in range(220)]
    check_classes(corpus + sentences)
    with open(os.path.join(OUT, "corpus.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(corpus) + "\n")

    tok, merges = train(corpus, VOCAB_SIZE, SPECIALS, MIN_FREQUENCY)
    assert len(tok) == VOCAB_SIZE, len(tok)
    added = []
    for i, t in enumerate(ADDED):
        added.append({"id": i if i < len(SPECIALS) else len(tok) + i - len(SPECIALS), **t})
    ref = Reference(tok, merges, added)
    write_json("tokenizer.json", tokenizer_json(tok, merges, added, False), indent=2)
    write_json("tokenizer_pairs.json", tokenizer_json(tok, merges, added, True), indent=2)

    cases = []
    for s in sentences:
        case = {"text": s}
        for v in VARIANTS:
            case[v] = ref.encode(s, v)
        case["roundtrip"] = ref.decode(case["base"]) == s.encode("utf-8")
        cases.append(case)
    n_bytes = sum(len(s.encode()) for s in sentences)
    n_ids = sum(len(c["base"]) for c in cases)
    write_json("cases.json", {
        "about": "expected ids from scripts/gen_bpe_fixtures.py (independent Python reference)",
        "unicode_version": unicodedata.unidata_version,
        "train": {"vocab_size": VOCAB_SIZE, "specials": SPECIALS, "min_frequency": MIN_FREQUENCY},
        "variants": VARIANTS,
        "cases": cases,
    })
    print("%d merges, %d sentences, %d bytes -> %d ids" % (len(merges), len(cases), n_bytes, n_ids))


if __name__ == "__main__":
    main()
