"""Baselines that do not read the target: every pool task (``all``) and a seeded draw (``random``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..selection import Scores, SelectionMethod
from ..util.helpers import stable_rng


class AllMethod(SelectionMethod):
    """Every pool task (the multi-task baseline): same training budget, spread over the whole pool."""

    name = "all"
    consumes = ("nothing",)
    depends_on_target = False
    uses_k = False

    def _score(self, target, pool, samples, allowed):
        return Scores(np.where(allowed, 1.0, -np.inf), why=lambda i: {"reason": "every pool task"})


class RandomMethod(SelectionMethod):
    """``k`` tasks drawn uniformly from the (sorted) candidates with a seed; the target is never looked at."""

    name = "random"
    consumes = ("seed",)
    depends_on_target = False

    def __init__(self, label: str | None = None, *, seed: int = 0, **options: Any):
        super().__init__(label or f"random-s{seed}", **options)
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _score(self, target, pool, samples, allowed):
        ids = sorted(t for t, a in zip(pool.ids, allowed) if a)
        order = stable_rng("random-method", self.seed).sample(ids, len(ids))
        pos = {t: len(ids) - i for i, t in enumerate(order)}
        score = np.asarray([float(pos.get(t, -np.inf)) for t in pool.ids])
        return Scores(score, why=lambda i: {"reason": f"seeded draw (seed {self.seed})"})
