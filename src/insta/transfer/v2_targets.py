"""Matrix v2's targets from a learnability screen, and the screen's in-task oracles as a reference row.

The pre-registered target rule (``experiments/transfer-v2-bigbench-smollm2/PREREGISTRATION.md``, "Targets"):
the candidates that pass the screen and are not v1 targets, in the screen's order; if fewer than ``max`` remain,
the v1 targets that pass are added after them (still in the screen's order); more than ``max``: the first ``max``.
Fewer than ``min`` passing in all: every passing candidate is used and the plan says how many passed (the screen is
never loosened). While the screen has pending candidates the list is not final (:attr:`TargetChoice.final`).

Each v2 target is evaluated on the screen's own evaluation examples (:func:`insta.transfer.screen.split_examples`),
so the screen's oracle of that target (trained on the target's own instances, evaluated on the same examples) is
comparable with every source: :func:`oracle_reference` reads its cells and gives its transfer per metric, a
reference row that is never scored as a source. Everything here reads the screen's files; nothing writes them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InstaError

if TYPE_CHECKING:  # pragma: no cover
    from ..records import Example, Task
    from .screen import Screen

PREFIX = "transfer config: targets.from_screen: "


@dataclass
class TargetChoice:
    """The target rule applied to one state of a screen (see the module docstring)."""

    targets: list[str]  # the rule's targets, in order (before the cost rule)
    passed: list[str]  # every passing candidate, in the screen's order
    v1_passed: list[str]  # the passing candidates that are v1 targets
    pending: list[str]  # candidates without a verdict yet
    n_candidates: int
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return not self.pending

    def status_line(self) -> str:
        """One line: final or not, and what is known."""
        known = (f"{len(self.passed)} pass, {self.counts.get('fail', 0)} fail, {len(self.pending)} pending of "
                 f"{self.n_candidates} candidates")
        if self.final:
            return f"targets final: the screen is complete ({known})"
        return f"targets are NOT final: the screen still has pending candidates ({known}); the list below is what " \
               "the rule gives from the verdicts so far"

    def to_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, "passed": self.passed, "v1_passed": self.v1_passed,
                "pending": self.pending, "n_candidates": self.n_candidates, "counts": self.counts,
                "final": self.final, "notes": self.notes}


def choose_targets(rows: Sequence[dict[str, Any]], v1: set[str], max_targets: int, min_targets: int,
                   seed: int | None = None) -> TargetChoice:
    """The pre-registered target rule on a screen's verdict rows (``screen.json``'s ``rows``, in the screen's
    order); ``v1``: the screen ids of v1's targets; ``seed``: the screen seed whose verdicts count (default: the
    first row's)."""
    if seed is None and rows:
        seed = rows[0].get("seed")
    rows = [r for r in rows if r.get("seed") == seed]
    passed = [r["task"] for r in rows if r.get("status") == "pass"]
    pending = [r["task"] for r in rows if r.get("status") == "pending"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    fresh = [t for t in passed if not is_v1(t, v1)]
    old = [t for t in passed if is_v1(t, v1)]
    targets = (fresh + old)[:max_targets] if len(fresh) < max_targets else fresh[:max_targets]
    notes = []
    if len(passed) < min_targets:
        notes.append(f"only {len(passed)} candidate(s) pass the screen (fewer than {min_targets}): every passing "
                     "candidate is a target; the screen is not loosened")
    elif len(fresh) < max_targets and old:
        notes.append(f"{len(fresh)} passing candidate(s) outside v1's targets (fewer than {max_targets}): "
                     f"{min(len(old), max_targets - len(fresh))} passing v1 target(s) added after them")
    if len(passed) > max_targets:
        notes.append(f"{len(passed)} candidates pass: the first {max_targets} in the screen's order are taken")
    return TargetChoice(targets=targets, passed=passed, v1_passed=old, pending=pending, n_candidates=len(rows),
                        counts=counts, notes=notes)


def screen_ids_of(targets: Sequence[str]) -> set[str]:
    """The screen ids (``bigbench:<task>``) that stand for a run's targets: a BBH task is screened as its BIG-bench
    parent; a BIG-bench subtask also marks its family."""
    from ..catalogs.bbh import BBH_PARENT

    out: set[str] = set()
    for spec in targets:
        cat, _, tid = spec.partition(":")
        if cat == "bbh":
            out.add(f"bigbench:{BBH_PARENT.get(tid, tid)}")
        else:
            out.add(spec)
    return out


def is_v1(spec: str, v1: set[str]) -> bool:
    """Whether a screen candidate is (a subtask of) a v1 target."""
    cat, _, tid = spec.partition(":")
    return spec in v1 or f"{cat}:{tid.split('/')[0]}" in v1


def v1_targets(path: str) -> set[str]:
    """The screen ids of the targets of another transfer config (v1's), read from its YAML."""
    from ..util.fileio import load_yaml

    raw = load_yaml(path, "targets.exclude_v1 config")
    targets = raw.get("targets") if isinstance(raw, dict) else None
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise InstaError(f"transfer config: targets.exclude_v1: {path} has no 'targets' list")
    return screen_ids_of(targets)


# ---------------------------------------------------------------- the screen's files


@dataclass
class ScreenSource:
    """A learnability screen read for matrix v2: its config, its summary (``screen.json``) and its
    :class:`~insta.transfer.screen.Screen` (for the exact keys of its cells)."""

    config_path: str
    summary: dict[str, Any]
    screen: Screen

    @property
    def folder(self) -> Path:
        return self.screen.out

    @property
    def model(self) -> str:
        return self.screen.cfg.model

    def rows(self) -> list[dict[str, Any]]:
        return list(self.summary["rows"])


def read_screen(config_path: str, data_dir: str | None = None) -> ScreenSource:
    """The screen of ``config_path`` with its ``screen.json``: one clear error when the config, its folder or its
    summary is missing, or when the summary was written by another screen configuration."""
    from ..util.fileio import parse_json, read_text
    from .screen import Screen
    from .screen_config import load_screen_config

    if not Path(config_path).is_file():
        raise InstaError(f"{PREFIX}screen config {config_path} not found")
    try:
        cfg = load_screen_config(config_path)
    except InstaError as err:
        raise InstaError(f"{PREFIX}{err}") from None
    if data_dir is not None and cfg.data_dir is None:
        cfg.data_dir = data_dir
    folder = Path(cfg.out)
    if not folder.is_dir():
        raise InstaError(f"{PREFIX}the screen's folder {folder} does not exist (run `insta screen {config_path}` "
                         "first)")
    path = folder / "screen.json"
    if not path.is_file():
        raise InstaError(f"{PREFIX}{path} not found (write it with `insta screen {config_path} --report-only`)")
    summary = parse_json(read_text(path, "screen summary"), str(path))
    if not isinstance(summary, dict) or not isinstance(summary.get("rows"), list):
        raise InstaError(f"{PREFIX}{path} is not a screen summary (no 'rows' list)")
    mismatch = _mismatch(summary, cfg)
    if mismatch:
        raise InstaError(f"{PREFIX}{path} was written by another screen configuration than {config_path} "
                         f"({mismatch})")
    return ScreenSource(config_path, summary, Screen(cfg))


def _mismatch(summary: dict[str, Any], cfg: Any) -> str:
    """What in ``screen.json`` differs from the screen config (empty when nothing does): its name, model, metric,
    budget and evaluation examples (``eval.n`` and ``eval.seed``)."""
    ev = summary.get("eval") if isinstance(summary.get("eval"), dict) else {}
    found = {"name": summary.get("name"), "model": summary.get("model"), "metric": summary.get("metric"),
             "budget": summary.get("budget"), "eval.n": ev.get("n", 200), "eval.seed": ev.get("seed", 0)}
    wanted = {"name": cfg.name, "model": cfg.model, "metric": cfg.metric,
              "budget": {"instances": cfg.instances, "learning_rate": cfg.learning_rate},
              "eval.n": cfg.n_eval, "eval.seed": cfg.eval_seed}
    for key, value in wanted.items():
        if found[key] != value:
            return f"{key}: {found[key]!r} in screen.json, {value!r} in the config"
    return ""


def screen_candidate(src: ScreenSource, spec: str, task: Task, catalog: str) -> Any:
    """The screen's :class:`~insta.transfer.screen.Candidate` of one target: its evaluation examples and training
    pool, split exactly as the screen split them."""
    from .screen import Candidate, split_examples

    eval_ex, train, n = split_examples(task, src.screen.cfg.n_eval, src.screen.cfg.eval_seed)
    return Candidate(spec, task, catalog, eval_ex, train, n)


def screen_eval_examples(src: ScreenSource, spec: str, task: Task, catalog: str) -> list[Example]:
    """The evaluation examples the screen used for ``spec`` (the v2 matrix evaluates the same ones)."""
    return list(screen_candidate(src, spec, task, catalog).eval_examples)


def screen_cells(src: ScreenSource, cand: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(base cell, oracle cell at the screen's budget and first seed) of one candidate; ``None`` when missing."""
    screen = src.screen
    base = screen.read_cell("base", cand)
    oracle = screen.read_cell(screen.model_key(cand, screen.screen_budget(), screen.cfg.seeds[0]), cand)
    return base, oracle


def base_seconds_per_example(src: ScreenSource, cand: Any) -> float | None:
    """Measured evaluation seconds per example of the base model on this candidate (``None``: not evaluated)."""
    base = src.screen.read_cell("base", cand)
    if base is None:
        return None
    try:
        return float(base["seconds"]) / max(1, len(base["samples"]["ids"]))
    except (KeyError, TypeError, ValueError):
        return None


def train_seconds_per_instance(src: ScreenSource) -> float | None:
    """Mean measured training seconds per instance over the screen's oracles (``None``: none trained yet)."""
    folder = src.folder / "trained"
    per = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(p.read_text())
            per.append(float(rec["seconds"]) / max(1, int(rec["n_records"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sum(per) / len(per) if per else None


# ---------------------------------------------------------------- the oracle reference row


def _aligned(samples: dict[str, list], ids: list[str]) -> dict[str, list]:
    """A cell's per-example arrays in the order of ``ids``."""
    index = {x: i for i, x in enumerate(samples["ids"])}
    return {k: [v[index[x]] for x in ids] if isinstance(v, list) and len(v) == len(samples["ids"]) else v
            for k, v in samples.items()}


def oracle_transfer(base: dict[str, Any], oracle: dict[str, Any], eval_ids: list[str], target: str
                    ) -> dict[str, float | None]:
    """The oracle's transfer per metric (signed so that higher is better, as the matrix's), from the screen's
    base and oracle cells of ``target``; an error line when their evaluation examples are not ``eval_ids``."""
    from ..matrix.cells import METRICS, cell_metrics
    from ..matrix.matrix import transfer_value

    for name, cell in (("base", base), ("oracle", oracle)):
        ids = list(cell["samples"]["ids"])
        if sorted(ids) != sorted(eval_ids):
            raise InstaError(f"oracle reference of {target}: the screen's {name} cell was evaluated on other "
                             f"examples than this matrix ({len(set(ids) ^ set(eval_ids))} differ): the oracle row "
                             "would not be comparable")
    mb = cell_metrics(_aligned(base["samples"], eval_ids))
    mo = cell_metrics(_aligned(oracle["samples"], eval_ids))
    out: dict[str, float | None] = {}
    for metric in METRICS:
        v, b = mo.get(metric), mb.get(metric)
        ok = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (v, b))
        out[metric] = round(transfer_value(metric, float(v), float(b)), 6) if ok else None
    return out


def oracle_reference(src: ScreenSource, targets: Sequence[Any], model: str) -> dict[str, Any]:
    """Per target (:class:`~insta.engine.pool.TargetInfo`): the screen oracle's transfer (``transfer``: metric ->
    value), or why there is none (``why``). Left out entirely when the screen ran another model."""
    if src.model != model:
        return {"why": f"the screen ran {src.model}, this matrix trains {model}: its oracles are another model's",
                "targets": {}}
    rows: dict[str, Any] = {}
    for t in targets:
        cand = screen_candidate(src, t.id, t.task, t.catalog)
        base, oracle = screen_cells(src, cand)
        if base is None or oracle is None:
            rows[t.id] = {"why": "the screen has no " + ("base" if base is None else "oracle") + " cell of it"}
            continue
        rows[t.id] = {"transfer": oracle_transfer(base, oracle, [ex.id for ex in t.eval_examples], t.id),
                      "seed": oracle.get("seed"), "screen_cell": oracle.get("key")}
    return {"screen": str(src.folder), "budget": src.summary.get("budget"), "targets": rows}


__all__ = ["ScreenSource", "TargetChoice", "base_seconds_per_example", "choose_targets", "is_v1", "oracle_reference",
           "oracle_transfer", "read_screen", "screen_candidate", "screen_cells", "screen_eval_examples",
           "screen_ids_of", "train_seconds_per_instance", "v1_targets"]
