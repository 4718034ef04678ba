"""One entry of an experiment's plan: a (target, method) pair with its selection, allocation, model and cell keys.

Its own module so that the planner (:mod:`.runner`) and the results assembler (:mod:`.results`) both read it
without importing each other."""
from __future__ import annotations

from dataclasses import dataclass

from ..selection import Selection


@dataclass
class GridEntry:
    """One (target, method) of the grid: its selection, training allocation, model and cell."""

    target: str  # TargetInfo.id
    label: str  # method label ("base" for the untrained model)
    method: str
    group: str
    seed: int | None
    selection: Selection | None
    allocation: dict[str, int] | None
    model_key: str  # "base" or a model hash
    eval_key: str


__all__ = ["GridEntry"]
