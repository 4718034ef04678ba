"""Instruction similarity (INSTA) and unlabelled target inputs (RoE's continuous signal) in one z-scored score."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InstaError
from ..selection import Scores, SelectionMethod
from .insta import InstaMethod, best_pair_lines
from .roe import InstanceIndex


def _zscores(x: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``x`` standardised over the allowed entries (non-finite values count as the lowest finite one)."""
    x = np.asarray(x, dtype=np.float64)
    vals = x[allowed]
    finite = vals[np.isfinite(vals)]
    low = finite.min() if len(finite) else 0.0
    x = np.where(np.isfinite(x), x, low)
    vals = x[allowed]
    sd = float(vals.std())
    return (x - float(vals.mean())) / sd if sd > 0 else np.zeros_like(x)


class HybridMethod(SelectionMethod):
    """Instruction similarity and unlabelled target inputs in one score (an option beyond the paper).

    ``score = (1 - weight) * z(INSTA score) + weight * z(instance score)``: the INSTA score with the given
    encoder / aggregation / format option, and RoE's continuous signal (the mean over target instances of the
    best cosine to a task's library instances), each standardised over the candidate tasks so that the
    ``weight`` (default 0.5: equal say) means the same for every pool. ``weight=0`` is INSTA, ``weight=1``
    ranks by instances alone. Ties: the instruction score.
    """

    name = "hybrid"
    consumes = ("instructions", "target_samples", "source_instances")
    shared_encoder = True

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        lines = best_pair_lines(why)
        if "z_instance" in why:
            lines.append(f"instructions z {why['z_instruction']:+.2f}, target inputs z {why['z_instance']:+.2f} "
                         f"(mean best cosine {why['instance_score']:.3f})")
        return lines + super().why_lines(why, n_samples)

    def __init__(self, label: str | None = None, *, encoder: Any = None, aggregation: str = "mean",
                 vote_depth: int = 10, weight: float = 0.5, library_size: int = 100, library_seed: int = 0,
                 format_aware: bool = False, n_target_instructions: int | None = None, **options: Any):
        super().__init__(label, **options)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InstaError(f"hybrid: weight must be a number between 0 and 1 (got {weight!r})")
        self.weight = float(weight)
        self.insta = InstaMethod(encoder=encoder, aggregation=aggregation, vote_depth=vote_depth,
                                 format_aware=format_aware, n_target_instructions=n_target_instructions)
        self.index = InstanceIndex(encoder, library_size, library_seed)

    def params(self) -> dict[str, Any]:
        return {**self.insta.params(), "weight": self.weight, "library_size": self.index.library_size,
                "library_seed": self.index.library_seed, "combine": "z-scores over the candidate tasks",
                "instance_signal": "mean best cosine of the target instances to the task's library"}

    def _score(self, target, pool, samples, allowed):
        ins = self.insta._score(target, pool, samples, allowed)
        _, inst = self.index.query(pool, samples, allowed)
        zi, zs = _zscores(ins.score, allowed), _zscores(inst, allowed)
        combined = np.where(allowed, (1 - self.weight) * zi + self.weight * zs, -np.inf)

        def why(i: int) -> dict[str, Any]:
            return {**(ins.why(i) if ins.why else {}), "instruction_score": float(ins.score[i]),
                    "instance_score": round(float(inst[i]), 4), "z_instruction": round(float(zi[i]), 3),
                    "z_instance": round(float(zs[i]), 3)}

        return Scores(combined, np.asarray(ins.score, dtype=np.float64), "instruction score", why,
                      {**ins.info, "weight": self.weight})
