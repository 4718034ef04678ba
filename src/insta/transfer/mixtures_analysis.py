"""Does matrix v2 predict what a user gets (issue #22 item 6)? The mixtures' order against the matrix's.

Per target, each method's top-k mixture (:mod:`.mixtures_config`) has

* a **predicted** value: the sum over its k sources of their v2 transfer to the target (``margin_z``, averaged over
  v2's seeds; ``acc`` alike as the secondary), read from the matrix before any mixture is trained;
* a **measured** value: the mixture model's change over the base model on the same evaluation examples, the mean
  per-example difference of standardized margins (each cell's own scale, as the matrix's cells) with a bootstrap
  CI over the examples, and the accuracy change (summed log-likelihood rule, the matrix's ``acc``);
* the target's in-task oracle (the screen's, on the same examples) as a reference: its transfer and the share of
  it the mixture reaches.

Agreement: Kendall's tau between the predicted and the measured values over the methods (``scipy.stats.kendalltau``,
its tau-b: a pair tied in either order counts as neither concordant nor discordant and the denominator shrinks
accordingly, so two methods that select the same sources, and so train the same model, leave the tau defined);
a target whose predicted or measured values all tie has no tau and is left out of the mean, with a note. The mean
over targets carries a percentile bootstrap CI over targets (:func:`insta.report.stats.bootstrap_mean_ci`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..report.stats import bootstrap_mean_ci

METRIC, SECONDARY = "margin_z", "acc"
TIES = ("Kendall's tau-b (scipy.stats.kendalltau): pairs tied in either order count as neither concordant nor "
        "discordant (two methods with the same sources train one model: a tie in both); a target whose values "
        "all tie has no tau and is left out of the mean")


def predicted(matrix: Any, target: str, sources: Sequence[str], metric: str) -> float | None:
    """The sum of the sources' mean v2 transfer to ``target`` (``None`` when one of them has none)."""
    values = matrix.mean_transfer(target, metric)
    if any(s not in values for s in sources):
        return None
    return float(sum(values[s] for s in sources))


def _aligned(samples: dict[str, Any], ids: list[str]) -> dict[str, list] | None:
    """A cell's rank arrays (``label``, ``scores_sum``, ``pred_sum``) in the order of ``ids``; ``None`` when the
    cell has other examples or no option scores."""
    pos = {x: i for i, x in enumerate(samples.get("ids") or [])}
    if set(pos) != set(ids) or not samples.get("scores_sum") or any(sc is None for sc in samples["scores_sum"]):
        return None
    return {"ids": list(ids), **{k: [samples[k][pos[x]] for x in ids] for k in ("label", "scores_sum", "pred_sum")}}


def measured(cell: dict[str, Any], base: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any] | None:
    """The mixture's change over the base model on the base cell's examples: standardized margin (mean of the
    per-example differences, bootstrap CI over examples) and accuracy."""
    from ..metrics import standardized_margins

    ids = list(base["samples"]["ids"])
    b, m = _aligned(base["samples"], ids), _aligned(cell["samples"], ids)
    if b is None or m is None:
        return None
    zb, zm = standardized_margins(b), standardized_margins(m)
    if not zb or not zm:
        return None
    diff = [x - y for x, y in zip(zm, zb)]
    mean, lo, hi = bootstrap_mean_ci(diff, n_boot, seed=seed)
    acc = [_accuracy(s) for s in (b, m)]
    return {METRIC: {"mean": mean, "lo": lo, "hi": hi, "n": len(diff)},
            SECONDARY: {"base": acc[0], "mixture": acc[1], "change": acc[1] - acc[0]}}


def _accuracy(s: dict[str, Any]) -> float | None:
    """Share of examples whose summed-log-likelihood prediction is the gold option (the matrix's ``acc``)."""
    pairs = [(p, lab) for p, lab in zip(s.get("pred_sum") or [], s.get("label") or []) if lab is not None]
    return sum(int(p == lab) for p, lab in pairs) / len(pairs) if pairs else None


def kendall(pred: Sequence[float], meas: Sequence[float]) -> float | None:
    """Kendall's tau-b of two orders (``None`` where undefined: fewer than 2 values, or one side all tied)."""
    from scipy.stats import kendalltau

    if len(pred) < 2 or len(set(pred)) < 2 or len(set(meas)) < 2:
        return None
    tau = kendalltau(pred, meas).statistic
    return float(tau) if math.isfinite(tau) else None


def _oracle_of(oracle: dict[str, Any] | None, target: str) -> dict[str, Any] | None:
    row = ((oracle or {}).get("targets") or {}).get(target) or {}
    tr = row.get("transfer")
    return {METRIC: tr.get(METRIC), SECONDARY: tr.get(SECONDARY)} if tr else None


# long: one pass over a target's methods with their predicted, measured and oracle columns
def target_rows(matrix: Any, target: str, slots: list[dict[str, str]], entries: dict[str, dict[str, Any]],
                cell: Callable[[str], dict[str, Any] | None], base_key: str, oracle: dict[str, Any] | None,
                n_boot: int, seed: int) -> dict[str, Any]:
    """One target: every slot's sources, predicted and measured values, the oracle share and the taus."""
    base = cell(base_key)
    ref = _oracle_of(oracle, target)
    rows = []
    for slot in slots:
        e = entries[slot["label"]]
        mix = cell(e["eval_key"])
        got = measured(mix, base, n_boot, seed) if (mix is not None and base is not None) else None
        row = {**slot, "sources": list(e["sources"]), "model_key": e["model_key"],
               "predicted": {m: predicted(matrix, target, e["sources"], m) for m in (METRIC, SECONDARY)},
               "measured": got}
        if got is not None and ref and isinstance(ref.get(METRIC), (int, float)) and ref[METRIC] > 0:
            row["oracle_share"] = got[METRIC]["mean"] / ref[METRIC]
        rows.append(row)
    taus: dict[str, Any] = {}
    for m in (METRIC, SECONDARY):
        pred = [r["predicted"][m] for r in rows]
        meas = [None if r["measured"] is None else (r["measured"][m]["mean"] if m == METRIC
                                                     else r["measured"][m]["change"]) for r in rows]
        if any(v is None for v in pred):
            taus[m] = {"tau": None, "why": "a selected source has no v2 transfer to this target"}
        elif any(v is None for v in meas):
            taus[m] = {"tau": None, "why": "mixture cells not finished"}
        else:
            tau = kendall(pred, meas)
            taus[m] = {"tau": tau, **({} if tau is not None else {"why": "every predicted or measured value ties"})}
    base_values = None if base is None else {METRIC: (base.get("metrics") or {}).get(METRIC),
                                             SECONDARY: _accuracy(base["samples"])}
    return {"target": target, "base": base_values, "oracle": ref, "methods": rows, "tau": taus}


def analyse(matrix: Any, targets: list[str], slots: list[dict[str, str]], entries: list[dict[str, Any]],
            cell: Callable[[str], dict[str, Any] | None], oracle: dict[str, Any] | None, n_boot: int = 10000,
            seed: int = 0) -> dict[str, Any]:
    """Every target's rows (:func:`target_rows`) and the mean tau per metric with its bootstrap CI over targets.
    ``entries``: the grid's entries as dicts (``target``, ``label``, ``sources``, ``model_key``, ``eval_key``);
    ``cell(eval_key)``: a finished cell or ``None``."""
    per_target = []
    for t in targets:
        mine = {e["label"]: e for e in entries if e["target"] == t}
        per_target.append(target_rows(matrix, t, slots, mine, cell, mine["base"]["eval_key"], oracle, n_boot, seed))
    summary = {}
    for m in (METRIC, SECONDARY):
        taus = [r["tau"][m]["tau"] for r in per_target]
        kept = [x for x in taus if x is not None]
        mean, lo, hi = bootstrap_mean_ci(kept, n_boot, seed=seed)
        summary[m] = {"mean": mean if kept else None, "lo": lo if len(kept) > 1 else None,
                      "hi": hi if len(kept) > 1 else None, "n": len(kept),
                      "left_out": {r["target"]: r["tau"][m].get("why") for r in per_target
                                   if r["tau"][m]["tau"] is None}}
    done = all(r["measured"] is not None for t in per_target for r in t["methods"])
    return {"metric": METRIC, "secondary": SECONDARY, "ties": TIES, "complete": done, "targets": per_target,
            "tau": summary, "bootstrap": n_boot, "seed": seed}


# ---------------------------------------------------------------- the report


def _f(x: Any, digits: int = 3, signed: bool = True) -> str:
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(row: dict[str, Any] | None) -> str:
    if not row or row.get("mean") is None:
        return "-"
    return f"{_f(row['mean'])} [{_f(row.get('lo'))}, {_f(row.get('hi'))}]"


def report_sections(result: dict[str, Any], head: list[str]) -> list[dict[str, Any]]:
    """The report's sections: what was run (``head``), the agreement, then one table per target."""
    tau = result["tau"]
    lines = [f"**Mean Kendall tau, predicted vs measured order of the methods ({METRIC}):** {_ci(tau[METRIC])} over "
             f"{tau[METRIC]['n']} target(s) (95% bootstrap CI over targets); accuracy (secondary): "
             f"{_ci(tau[SECONDARY])} over {tau[SECONDARY]['n']}.",
             "Predicted: the sum of the k selected sources' v2 transfers to the target. Measured: the mixture model's "
             "change over the base model on the same evaluation examples (margin_z: 95% bootstrap CI over "
             "examples). Ties: " + TIES + "."]
    if not result["complete"]:
        lines.append("**Partial:** some mixture cells are not finished; their targets have no tau yet.")
    for m, s in tau.items():
        for t, why in s["left_out"].items():
            lines.append(f"No {m} tau for {t}: {why}.")
    sections = [{"title": "Design", "paragraphs": head}, {"title": "Agreement", "paragraphs": lines}]
    header = ["method", "sources", "predicted Σ margin_z", "measured Δ margin_z [95% CI]", "acc base → mixture (Δ)",
              "predicted Σ acc", "share of oracle Δ margin_z"]
    for t in result["targets"]:
        rows = []
        for r in t["methods"]:
            got = r["measured"] or {}
            acc = got.get(SECONDARY)
            rows.append([f"{r['label']} ({r['role']})", ", ".join(r["sources"]), _f(r["predicted"][METRIC]),
                         _ci(got.get(METRIC)),
                         f"{_f(acc['base'], signed=False)} → {_f(acc['mixture'], signed=False)} ({_f(acc['change'])})"
                         if acc else "-", _f(r["predicted"][SECONDARY]), _f(r.get("oracle_share"), 2, False)])
        o = t["oracle"] or {}
        para = [f"Kendall tau: {_f(t['tau'][METRIC]['tau'], 2)} (margin_z), {_f(t['tau'][SECONDARY]['tau'], 2)} "
                f"(acc). In-task oracle (reference, not a source): Δ margin_z {_f(o.get(METRIC))}, Δ acc "
                f"{_f(o.get(SECONDARY))}."]
        sections.append({"title": t["target"], "level": 3, "paragraphs": para, "tables": [(header, rows)]})
    return sections


def write_report(result: dict[str, Any], out: Any, head: list[str], title: str) -> None:
    """``mixtures.json`` and ``mixtures.md`` in ``out``."""
    from pathlib import Path

    from ..report import render_markdown
    from ..util.paths import atomic_write_json, atomic_write_text

    atomic_write_json(Path(out) / "mixtures.json", result)
    atomic_write_text(Path(out) / "mixtures.md", render_markdown(title, report_sections(result, head)))


__all__ = ["METRIC", "SECONDARY", "TIES", "analyse", "kendall", "measured", "predicted", "report_sections",
           "target_rows", "write_report"]
