"""Synthetic texts that tokenize to exactly the requested number of tokens.

Texts are built from whole-word entries of the tokenizer's vocabulary (alphabetic, at least
three characters, not ``##`` continuations or special tokens), so a WordPiece tokenizer maps
each word to exactly one token. Lengths are checked with the tokenizer itself (without
special tokens); any word that does not round-trip to one token is excluded.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

#: The seed's fixed query (xpmir/mice scripts/compare_latency_footprint.py).
PAPER_QUERY = "what is artificial intelligence?"


class InputError(ValueError):
    pass


FALLBACK_WORDS: tuple[str, ...] = tuple(
    "the of and to in is was for on that with as by at from his her this are were be which "
    "have had not one all but they their she there been has when who will more no if out so "
    "what up its about into than them can only other new some time could these two may then "
    "first any like now such our over even most after also made many where well only world "
    "water house music city river state school night light black white small great north "
    "south early life order power water paper system report market green model study field "
    "table point cause group class voice issue".split())


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@lru_cache(maxsize=8)
def _words_cached(tok_id: int, tokenizer: Any, limit: int) -> tuple[str, ...]:
    vocab = tokenizer.get_vocab()
    cands = sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) >= 3
                   and not w.startswith("##") and w.lower() == w)
    rng = random.Random(0)
    rng.shuffle(cands)
    cands = cands[: limit * 2]
    # keep only words that are exactly one token in the middle of a text
    good = []
    probe = 64
    for i in range(0, len(cands), probe):
        chunk = cands[i : i + probe]
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        good.extend(w for w, t in zip(chunk, ids) if len(t) == 1)
        if len(good) >= limit:
            break
    if len(good) < 16:
        # tiny or unusual vocabularies: common English words that map to one token each
        # (possibly [UNK]; the token count, which is what is timed, is still exact)
        ids = tokenizer(list(FALLBACK_WORDS), add_special_tokens=False)["input_ids"]
        good = [w for w, t in zip(FALLBACK_WORDS, ids) if len(t) == 1]
    if len(good) < 8:
        raise InputError("cannot find words that the tokenizer maps to a single token")
    return tuple(good[:limit])


def vocabulary_words(tokenizer: Any, limit: int = 2000) -> tuple[str, ...]:
    return _words_cached(id(tokenizer), tokenizer, limit)


def make_text(tokenizer: Any, n_tokens: int, rng: random.Random,
              words: tuple[str, ...] | None = None) -> str:
    """A text of exactly ``n_tokens`` tokens (without special tokens)."""
    if n_tokens < 1:
        raise InputError(f"a text needs at least one token, asked for {n_tokens}")
    words = words or vocabulary_words(tokenizer)
    text = " ".join(rng.choice(words) for _ in range(n_tokens))
    got = _count(tokenizer, text)
    if got != n_tokens:  # pragma: no cover - only with exotic tokenizers
        raise InputError(f"could not build a text of {n_tokens} tokens (got {got})")
    return text


def make_texts(tokenizer: Any, count: int, n_tokens: int, seed: int = 0) -> list[str]:
    """``count`` distinct texts of exactly ``n_tokens`` tokens each (deterministic)."""
    rng = random.Random(seed * 1_000_003 + n_tokens)
    words = vocabulary_words(tokenizer)
    return [make_text(tokenizer, n_tokens, rng, words) for _ in range(count)]


def token_count(tokenizer: Any, text: str) -> int:
    return _count(tokenizer, text)
