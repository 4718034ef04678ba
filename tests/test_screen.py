"""insta screen: candidate rules and the disjoint split, margins and verdicts against hand computations, the
constant-base rule, resume, and the CLI, on the fixture tasks with fake backends (plus one real-data plan)."""
import json
import os
from pathlib import Path

import pytest

from insta import cli
from insta.errors import InstaError
from insta.engine import DryRunBackend
from insta.records import Example, Task
from insta.matrix.cells import (
    cell_metrics,
    compact_rank_samples,
    constant_share,
    margins,
    option_scale,
    per_example,
    predicted_texts,
    standardized_margins,
)
from insta.transfer.screen import Screen, split_examples
from insta.transfer.screen_config import load_screen_config, screen_config_from_dict
from insta.transfer.screen_verdicts import paired_change, summarise

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "screen-tiny.yaml"
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"


def quiet(msg):
    pass


def tiny(tmp_path, **over):
    return load_screen_config(str(TINY), {"data_dir": str(DATA), "out": str(tmp_path / "out"), **over})


def rank_sample(i, options, label, sums, ntok=None):
    return {"type": "rank", "id": f"ex{i}", "options": options, "label": label, "scores_sum": sums,
            "n_tokens": ntok or [1] * len(options), "scores_calibrated": None}


def test_margins_by_hand():
    samples = [rank_sample(0, ["a", "b", "c"], 1, [-3.0, -1.0, -2.5]),  # gold best: -1 - (-2.5) = 1.5
               rank_sample(1, ["a", "b"], 0, [-4.0, -1.0])]  # gold worse: -4 - (-1) = -3
    s = compact_rank_samples(samples)
    assert margins(s) == pytest.approx([1.5, -3.0])
    assert cell_metrics(s)["margin"] == pytest.approx(-0.75)
    assert predicted_texts(s) == ["b", "b"]
    assert s["options"] == [["a", "b", "c"], ["a", "b"]] and s["n_tokens"] == [[1, 1, 1], [1, 1]]
    # a cell written before per-option scores were kept has no margin (and metrics skip it)
    old = {k: v for k, v in s.items() if k not in ("scores_sum", "options", "n_tokens")}
    assert margins(old) is None and cell_metrics(old)["margin"] is None and predicted_texts(old) is None


def test_standardized_margin_by_hand_and_flattening():
    s = compact_rank_samples([rank_sample(0, ["a", "b"], 0, [-1.0, -3.0]),  # margin +2, option sd 1
                              rank_sample(1, ["a", "b"], 1, [-1.0, -4.0])])  # margin -3, option sd 1.5
    scale = ((1.0 + 2.25) / 2) ** 0.5
    assert option_scale(s) == pytest.approx(scale)
    assert standardized_margins(s) == pytest.approx([2 / scale, -3 / scale])
    assert cell_metrics(s)["margin_z"] == pytest.approx(-0.5 / scale)
    # a model that only flattens every option score (x 0.4) gains raw margin but not standardized margin
    flat = compact_rank_samples([rank_sample(0, ["a", "b"], 0, [-0.4, -1.2]),
                                 rank_sample(1, ["a", "b"], 1, [-0.4, -1.6])])
    assert cell_metrics(flat)["margin"] > cell_metrics(s)["margin"]
    assert cell_metrics(flat)["margin_z"] == pytest.approx(cell_metrics(s)["margin_z"])
    assert per_example(flat, "margin_z") == pytest.approx(per_example(s, "margin_z"))
    # every option scored alike: no scale, so no standardized margin (nan), never a division by zero
    tie = compact_rank_samples([rank_sample(0, ["a", "b"], 0, [-1.0, -1.0])])
    assert option_scale(tie) != option_scale(tie)


def test_paired_change_and_constant_share():
    base = compact_rank_samples([rank_sample(i, ["x", "y"], i % 2, [-1.0, -2.0]) for i in range(6)])
    tuned = compact_rank_samples([rank_sample(i, ["x", "y"], i % 2, [-1.0, -2.0] if i % 2 == 0 else [-2.0, -0.5])
                                  for i in range(6)])
    # base margins: +1 (label 0), -1 (label 1) alternately; tuned: +1, +1.5 -> mean change (0 + 2.5) / 2 = 1.25
    ch = paired_change(base, tuned, "margin", n_boot=500, confidence=0.95)
    assert ch["change"] == pytest.approx(1.25) and ch["low"] <= ch["change"] <= ch["high"]
    assert ch["base"] == pytest.approx(0.0) and ch["tuned"] == pytest.approx(1.25)
    acc = paired_change(base, tuned, "acc", n_boot=500, confidence=0.95)
    assert acc["base"] == pytest.approx(0.5) and acc["tuned"] == pytest.approx(1.0)
    assert constant_share(base) == 1.0  # always "x"
    assert constant_share(tuned) == pytest.approx(0.5)
    other = dict(tuned, ids=[f"z{i}" for i in range(6)])
    with pytest.raises(InstaError, match="different examples"):
        paired_change(base, other, "margin", 100, 0.95)


def test_split_keeps_renderings_of_one_row_on_one_side():
    # a P3-like task: 30 rows, each rendered with 3 templates
    exs = [Example(id=f"t:{tpl}:{row}", input=f"row {row} template {tpl}", references=["yes"], options=["yes", "no"],
                   label=0, provenance={"file": "val.jsonl", "row": row, "template_id": tpl})
           for row in range(30) for tpl in ("a", "b", "c")]
    task = Task(id="t", instructions=["i"], catalog="p3", loader=lambda: iter(exs))
    eval_ex, train, n_groups = split_examples(task, 10, 0)
    assert n_groups == 30 and len(eval_ex) == 10 and len(train) == 60
    eval_rows = {ex.provenance["row"] for ex in eval_ex}
    assert len(eval_rows) == 10 and not eval_rows & {ex.provenance["row"] for ex in train}
    assert split_examples(task, 10, 0)[0] == eval_ex  # stable
    assert [ex.id for ex in split_examples(task, 10, 1)[0]] != [ex.id for ex in eval_ex]  # the seed matters


def test_candidates_rule_and_order(tmp_path):
    cfg = tiny(tmp_path, **{"candidates.later": ["bigbench:capitals"],
                            "candidates.exclude": ["bigbench:zoo_statements"]})
    s = Screen(cfg, log=quiet)
    s.prepare()
    ids = [c.spec for c in s.candidates]
    assert ids[-1] == "bigbench:capitals"  # screened last
    assert "bigbench:zoo_statements" not in ids
    why = {r["task"]: r["why"] for r in s.left_out}
    assert why["bigbench:zoo_statements"] == "excluded by the config"
    assert "usable examples" in why["bigbench:story_writing"]  # generation only: no options
    for c in s.candidates:  # evaluation and training are disjoint
        assert not {ex.id for ex in c.eval_examples} & {ex.id for ex in c.train_pool}
        assert len(c.eval_examples) == cfg.n_eval


class ConstantBaseBackend(DryRunBackend):
    """The base model always answers the first option text of animal_facts; trained models are the dry run's."""

    def evaluate(self, handle, examples, options, task_id, catalog):
        res = super().evaluate(handle, examples, options, task_id, catalog)
        if not handle["counts"] and task_id == "animal_facts":
            for s in res["samples"]:  # one answer text whatever the input
                s["options"] = ["always"] + [f"other {i}" for i in range(1, len(s["options"]))]
                s["scores_sum"] = [0.0] + [-9.0] * (len(s["options"]) - 1)
                s["pred_sum"] = 0
        return res


def test_run_resume_and_constant_base(tmp_path):
    backend = ConstantBaseBackend()
    cfg = tiny(tmp_path, curve={"targets": [], "instances": []}, **{"candidates.include": []})
    s = Screen(cfg, backend=backend, log=quiet)
    s.prepare()
    info = s.run(progress=False)
    n_cand = len(s.candidates)
    summary = summarise(s)
    rows = {r["task"]: r for r in summary["rows"]}
    assert rows["bigbench:animal_facts"]["status"] == "fail"
    assert rows["bigbench:animal_facts"]["why"] == "base model constant (100% one answer)"
    const = [c for c in s.candidates if s.base_constant(c)]
    assert [c.spec for c in const] == ["bigbench:animal_facts"]
    assert info["trained"] == n_cand - len(const)  # no oracle for a constant base
    for c in const:
        assert not s.cell_path(s.eval_key(s.model_key(c, s.screen_budget(), 0), c)).exists()
    # a verdict agrees with a recomputation from the cells
    for r in summary["rows"]:
        if r["status"] in ("pass", "fail") and "margin_z" in r:  # the pass rule reads the config's metric
            assert (r["status"] == "pass") == (r[cfg.metric]["low"] > 0) and cfg.metric == "margin_z"
    assert sum(summary["counts"].values()) == n_cand and summary["counts"].get("pending", 0) == 0
    # resume: a second run trains and evaluates nothing
    n_train, n_eval = backend.n_train, backend.n_eval
    again = Screen(cfg, backend=backend, log=quiet)
    again.prepare()
    assert again.run(progress=False)["units_run"] == 0
    assert (backend.n_train, backend.n_eval) == (n_train, n_eval)
    assert again.plan()["units_to_run"] == 0


def test_max_units_stops_early_and_plan_counts(tmp_path):
    cfg = tiny(tmp_path)
    s = Screen(cfg, log=quiet)
    s.prepare()
    before = s.plan()
    assert before["cells_done"] == 0 and before["units_to_run"] == before["n_units"]
    s.run(progress=False, max_units=2)
    after = s.plan()
    assert after["units_to_run"] == before["units_to_run"] - 2
    first = s.candidates[0]  # candidate by candidate: the base model on the first one, then its oracle
    assert after["units"][0] == {"unit": f"base model on {first.spec}", "cells": 1, "done": 1, "needed": False}
    assert after["units"][1]["unit"].startswith(f"oracle {first.spec} ") and after["units"][1]["done"] == 1
    assert after["cells_done"] == 2


@pytest.mark.parametrize("raw, msg", [
    ({"name": "x", "bogus": 1}, "unknown key"),
    ({"name": "x", "seeds": [0, 0]}, "seeds"),
    ({"name": "x", "constant_share": 1.5}, "constant_share"),
    ({"name": "x", "candidates": {"include": ["rte"]}}, "catalog:task"),
    ({"name": "x", "curve": {"learning_rates": [float("nan")]}}, "learning_rates"),
    ({"name": "x", "curve": {"instances": [0]}}, "curve.instances"),
    ({"name": "x", "train": {"epochs": "many"}}, "train.epochs"),
    ({"name": "x", "eval": {"calibration": "fixed"}}, "calibration"),
    ({"name": "x", "backend": "gpu"}, "backend"),
    ({"name": "x", "metric": "nll_per_token"}, "metric must be one of"),
])
def test_bad_configs(raw, msg):
    with pytest.raises(InstaError, match=msg):
        screen_config_from_dict(raw)


def test_curve_target_must_be_a_candidate(tmp_path):
    cfg = tiny(tmp_path, curve={"targets": ["bigbench:story_writing"], "instances": [2]})
    with pytest.raises(InstaError, match="curve.targets"):
        Screen(cfg, log=quiet).prepare()


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["screen", str(TINY), "--data-dir", str(DATA), "--out", str(out), "-q"]
    assert cli.main(args + ["--plan"]) == 0
    assert cli.main(args + ["--report-only"]) == 2  # no cells yet: one line, non-zero
    assert "no screen cells" in capsys.readouterr().err
    assert cli.main(args + ["--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    md = (out / "screen.md").read_text()
    assert f"**{summary['counts'].get('pass', 0)} pass" in md
    assert all(r["task"] in md for r in summary["rows"])
    assert cli.main(args + ["--report-only"]) == 0
    assert json.loads((out / "screen.json").read_text())["rows"] == summary["rows"]
    assert cli.main(args + ["--max-units", "0"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("INSTA_DATA_DIR"), reason="needs the real data folder")
def test_real_config_plans():
    cfg = load_screen_config(str(REPO / "configs" / "screen-bigbench-smollm2.yaml"),
                             {"data_dir": os.environ["INSTA_DATA_DIR"]})
    s = Screen(cfg, log=quiet, backend=DryRunBackend())
    s.prepare()
    ids = [c.spec for c in s.candidates]
    assert "p3:super_glue/rte" in ids and len(ids) >= 24
    assert all(len(c.eval_examples) == 200 and len(c.train_pool) >= 100 for c in s.candidates)
    fams = [f"{c.catalog}:{c.task.family}" for c in s.candidates]
    assert len(fams) == len(set(fams))  # one per family
    later = [i for i, c in enumerate(ids) if c in cfg.candidates.later]
    assert later == list(range(len(ids) - len(later), len(ids)))  # v1's targets last
    why = {r["task"]: r["why"] for r in s.left_out}
    assert "104 usable examples" in why["p3:super_glue/wsc.fixed"]


def test_second_screen_on_one_folder_is_refused(tmp_path, capsys):
    from insta.util.paths import run_lock

    out = tmp_path / "out"
    args = ["screen", str(TINY), "--data-dir", str(DATA), "--out", str(out), "-q"]
    with run_lock(out, "screen"):  # as another process holding the folder would
        assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another insta screen run" in err[0]
    assert not (out / "cells").exists()  # nothing written
    assert cli.main(args) == 0  # released: the screen runs
