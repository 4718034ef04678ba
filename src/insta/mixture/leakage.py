"""Leakage of the target's evaluation instances into a mixture: :class:`LeakFilter` (see :mod:`insta.mixture`)."""
from __future__ import annotations

import re
from typing import Sequence

from ..records import Example


_TOKEN = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class LeakFilter:
    """Detects source instances that reproduce a target evaluation instance (see the module docstring)."""

    def __init__(self, target_examples: Sequence[Example], n: int = 8):
        self.n = n
        self.full: set[str] = set()
        self.short: list[str] = []
        per_example: list[set[tuple[str, ...]]] = []
        for ex in target_examples:
            self.full.add(" ".join(_words(ex.input)))
            raw = ex.provenance.get("raw_input")
            words = _words(raw if isinstance(raw, str) and raw.strip() else ex.input)
            if 4 <= len(words) < n:
                self.short.append(" " + " ".join(words) + " ")
            per_example.append({tuple(words[i:i + n]) for i in range(len(words) - n + 1)})
        df: dict[tuple[str, ...], int] = {}
        for grams in per_example:
            for g in grams:
                df[g] = df.get(g, 0) + 1
        limit = max(2, int(0.05 * len(per_example)))
        self.grams = {g for g, c in df.items() if c <= limit}
        self.n_targets = len(per_example)

    def leaks(self, text: str) -> bool:
        words = _words(text)
        if " ".join(words) in self.full:
            return True
        n = self.n
        if any(tuple(words[i:i + n]) in self.grams for i in range(len(words) - n + 1)):
            return True
        if self.short:
            padded = " " + " ".join(words) + " "
            return any(s in padded for s in self.short)
        return False
