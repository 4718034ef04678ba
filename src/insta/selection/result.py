"""The result of every selection method: :class:`Selection` (ranked :class:`TaskScore` s with the "why" of each
pick, tie groups, how k was chosen, what the method consumed, its configuration; ``to_dict``/``from_dict``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: What a method may consume, in words (reported with every selection).
CONSUMPTIONS = {
    "instructions": "target and source task instructions",
    "target_samples": "unlabelled target instances (inputs with their answer options, no labels)",
    "source_instances": "instances of every source task (a fixed-size library per task)",
    "prior_matrix": "transfer measured before (a prior transfer matrix's targets and sources)",
    "seed": "a random seed only",
    "nothing": "nothing but the pool",
}


@dataclass
class TaskScore:
    """One ranked source task: its score, the evidence behind it (``why``) and its tie group (if tied)."""

    rank: int
    task: str
    score: float
    why: dict[str, Any] = field(default_factory=dict)
    tie_group: int | None = None

    # INSTA's "why" fields, as attributes (``None`` for other methods)
    @property
    def best_target_instruction(self) -> str | None:
        return self.why.get("best_target_instruction")

    @property
    def best_source_instruction(self) -> str | None:
        return self.why.get("best_source_instruction")

    @property
    def best_pair_cosine(self) -> float | None:
        return self.why.get("best_pair_cosine")

    @property
    def mean_cosine(self) -> float | None:
        return self.why.get("mean_cosine")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "task": self.task, "score": self.score, "why": dict(self.why)}
        if self.tie_group is not None:
            out["tie_group"] = self.tie_group
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskScore":
        why = d.get("why", d.get("detail"))
        if why is None:  # an `insta select` file written before the "why" field: INSTA's pair at the top level
            why = {k: d[k] for k in ("best_target_instruction", "best_source_instruction", "best_pair_cosine",
                                     "mean_cosine", "max_cosine") if k in d}
        return cls(int(d["rank"]), str(d["task"]), float(d["score"]), dict(why or {}), d.get("tie_group"))


@dataclass
class Selection:
    """The ranked selection of one method for one target, with everything needed to reproduce and explain it.

    ``target``: what the target was (``task``/``catalog``/``family`` for a catalog task, ``instructions``,
    ``n_samples``); ``selected``: the ranked picks; ``ties``: the tie groups that touch the selection (every
    member, selected or not); ``k_choice``: how many and why; ``consumed``: what the method read;
    ``config``: the method, its parameters and the pool.
    """

    target: dict[str, Any]
    selected: list[TaskScore]
    config: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    method: str = "insta-mean"
    label: str = ""
    consumed: list[str] = field(default_factory=list)
    n_pool: int = 0
    seconds: float = 0.0
    ties: list[dict[str, Any]] = field(default_factory=list)
    k_choice: dict[str, Any] = field(default_factory=dict)

    @property
    def task_ids(self) -> list[str]:
        return [s.task for s in self.selected]

    @property
    def params(self) -> dict[str, Any]:
        return self.config.get("params", {})

    @property
    def target_id(self) -> str | None:
        return self.target.get("id") or self.target.get("task")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "label": self.label or self.method,
            "catalog": self.config.get("catalog"),
            "data_dir": self.config.get("data_dir"),
            "target": self.target,
            "k": len(self.selected),
            "k_choice": self.k_choice,
            "selected": [s.to_dict() for s in self.selected],
            "ties": self.ties,
            "consumed": list(self.consumed),
            "consumed_described": [CONSUMPTIONS.get(c, c) for c in self.consumed],
            "excluded": self.excluded,
            "n_pool": self.n_pool,
            "config": self.config,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Selection":
        """Read :meth:`to_dict` output (also the JSON of earlier versions: ``insta select`` files and the
        experiment's cached method results)."""
        target = d.get("target")
        if not isinstance(target, dict):
            target = {"task": target} if target else {}
        config = dict(d.get("config") or {})
        if "params" in d and "params" not in config:
            config["params"] = d["params"]
        for key in ("catalog", "data_dir"):
            if d.get(key) is not None:
                config.setdefault(key, d[key])
        return cls(
            target=target, selected=[TaskScore.from_dict(s) for s in d.get("selected", [])], config=config,
            excluded=list(d.get("excluded", [])), method=d.get("method") or config.get("method", "insta-mean"),
            label=d.get("label") or d.get("method") or "", consumed=list(d.get("consumed", ["instructions"])),
            n_pool=int(d.get("n_pool", config.get("n_pool_tasks", 0)) or 0), seconds=float(d.get("seconds", 0.0)),
            ties=list(d.get("ties", [])), k_choice=dict(d.get("k_choice") or {}),
        )
