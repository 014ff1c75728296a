"""A CLIP tokenizer over a small closed vocabulary, built locally (no hub download).

CLIP's tokenizer is byte-pair encoding: a word is split into characters and merged pair by pair.
For a closed vocabulary we emit, for every word, the left-to-right chain of merges that rebuilds it,
so each known word becomes exactly one token and unknown words fall back to single characters.

The tokenizer is built from a ``vocab.json`` and ``merges.txt`` written to a temporary folder and read back with
``CLIPTokenizer.from_pretrained``: that is the one constructor transformers 4.x (whose ``CLIPTokenizer`` needs
file paths) and 5.x (whose ``CLIPTokenizer`` takes in-memory ``vocab``/``merges`` instead) both accept.
"""

from __future__ import annotations

import json
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 16) -> CLIPTokenizer:
    """Build a CLIPTokenizer whose vocabulary holds every character and every word in ``words``.

    Args:
        words: lower-case words made of ASCII letters (e.g. ``["a", "red", "square"]``).
        model_max_length: padded token length the pipeline uses for prompts.
    """
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        if token not in vocab:
            vocab[token] = len(vocab)

    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        add(ch)
        add(ch + "</w>")
    merges: list[tuple[str, str]] = []
    for word in sorted(set(words)):
        if not word or not all(c in string.ascii_lowercase for c in word):
            raise ValueError(f"word {word!r} must be non-empty lower-case ASCII letters")
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        merged = symbols[0]
        for nxt in symbols[1:]:
            rule = (merged, nxt)
            if rule not in merges:
                merges.append(rule)
            merged = merged + nxt
            add(merged)
    for token in SPECIAL_TOKENS:
        add(token)
    with tempfile.TemporaryDirectory(prefix="word_tokenizer_") as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        # transformers 4.x skips the first line of merges.txt (the version header) unread.
        lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
        Path(folder, "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)
