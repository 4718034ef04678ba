"""Report generation on a tiny hand-made grid: metrics from per-example arrays, mean ± sd over seeds, paired
bootstrap verdicts, and the files (JSON, markdown, PNG plots, self-contained HTML)."""
import json
import random

import pytest

from insta.errors import InstaError
from insta.metrics import balanced_accuracy
from insta.report import load_results, metric_on, primary_definition, primary_metric_of, summarize, write_report


def _samples(n, correct_rate, rng, labels=("True", "False"), bias=None):
    """Per-example arrays as the experiment stores them."""
    s = {k: [] for k in ("ids", "gold", "label", "pred_sum", "pred_norm", "pred_norm_token", "pred_calibrated",
                         "gold_logprob", "gold_nll_per_token", "n_options", "exact_match")}
    s["format"] = 2
    for i in range(n):
        lab = i % len(labels)
        ok = rng.random() < correct_rate
        pred = lab if ok else (bias if bias is not None else (lab + 1) % len(labels))
        s["ids"].append(f"t:{i}")
        s["gold"].append(labels[lab])
        s["label"].append(lab)
        for rule in ("sum", "norm", "norm_token", "calibrated"):
            s[f"pred_{rule}"].append(pred)
        s["gold_logprob"].append(-1.0 if ok else -3.0)
        s["gold_nll_per_token"].append(1.0 if ok else 3.0)
        s["n_options"].append(len(labels))
        s["exact_match"].append(None)
    return s


def fake_results(n=60):
    rng = random.Random(0)
    targets = [
        {"id": "bigbench:alpha", "task": "alpha", "n_eval": n, "n_available": n, "n_samples": 8,
         "samples_overlap_eval": False, "fixed_labels": True, "label_set": ["False", "True"], "chance": 0.5,
         "rank_classification": True},
        {"id": "bbh:beta", "task": "beta", "n_eval": n, "n_available": 200, "n_samples": 8,
         "samples_overlap_eval": True, "fixed_labels": False, "label_set": None, "chance": 0.25,
         "rank_classification": True},
    ]
    rates = {"base": 0.5, "insta-mean": 0.95, "all": 0.55, "random-s0": 0.5, "random-s1": 0.55, "random-s2": 0.45}
    methods = [{"label": "base", "method": "base", "group": "base", "consumes": [], "depends_on_target": False,
                "params": {"model": "m"}},
               {"label": "insta-mean", "method": "insta-mean", "group": "insta-mean", "consumes": ["instructions"],
                "depends_on_target": True, "params": {"encoder": "hashing", "aggregation": "mean"}},
               {"label": "all", "method": "all", "group": "all", "consumes": ["nothing"], "depends_on_target": False,
                "params": {}}]
    methods += [{"label": f"random-s{s}", "method": "random", "group": "random", "seed": s, "consumes": ["seed"],
                 "depends_on_target": False, "params": {"seed": s}} for s in range(3)]
    cells, samples = [], {}
    for t in targets:
        for m in methods:
            key = f"{t['id']}|{m['label']}"
            samples[key] = _samples(n, rates[m["label"]], rng, labels=("A", "B", "C", "D") if t["id"] == "bbh:beta"
                                    else ("True", "False"))
            sel = [] if m["label"] == "base" else (["p1", "p2"] if m["label"] != "all" else ["p1", "p2", "p3", "p4"])
            cells.append({"target": t["id"], "label": m["label"], "method": m["method"], "group": m["group"],
                          "seed": m.get("seed"), "selected": sel, "allocation": {x: 1 for x in sel} or None,
                          "model_key": "base" if m["label"] == "base" else f"m-{m['label']}", "eval_key": key,
                          "train": {}})
    return {"name": "fake", "config": {"report": {"bootstrap": 400}, "train": {"epochs": 1}, "eval": {"n": n}},
            "k": 2, "n_total": 10, "model": "m", "backend": "transformers", "targets": targets,
            "pool": {"n": 4, "tasks": ["p1", "p2", "p3", "p4"], "removed": [{"task": "x", "reason": "format: long"}],
                     "removed_by_reason": {"format": 1}},
            "methods": methods, "cells": cells, "samples": samples, "missing_cells": [],
            "trained_models": [{"model_key": "m-all", "labels": ["all"], "allocation": {"p1": 1}, "seconds": 3.0,
                                "metrics": {"global_step": 2, "first_loss": 2.0, "last_loss": 1.5}}],
            "stats": {"trained": 5, "evaluated": 12, "cells_cached": 0}, "machine": {"cpus": 2},
            "command": "insta experiment fake.yaml", "seconds_total": 12.0,
            "p3_table": {"k": 2, "pool_size": 35, "variants": [{"name": "insta-mean"}],
                         "rows": [{"target": "super_glue/rte", "insta-mean": [{"task": "paws", "score": 0.5},
                                                                              {"task": "qqp", "score": 0.4}]}],
                         "note": "no aligned P3 encoder configured", "anli": "anli = R1-R3"}}


def test_metric_on_matches_the_metrics_module():
    s = _samples(40, 0.6, random.Random(1), labels=("yes", "no", "maybe"), bias=0)
    preds = [s["gold"][0] if False else ("yes", "no", "maybe")[p] for p in s["pred_norm"]]
    assert metric_on(s, "bal_acc_norm") == pytest.approx(balanced_accuracy(preds, s["gold"]))
    assert metric_on(s, "acc") == pytest.approx(sum(p == lab for p, lab in zip(s["pred_sum"], s["label"])) / 40)
    assert metric_on(s, "bal_acc") == pytest.approx(balanced_accuracy([("yes", "no", "maybe")[p] for p in s["pred_sum"]],
                                                                      s["gold"]))
    assert metric_on(s, "gold_logprob") == pytest.approx(sum(s["gold_logprob"]) / 40)
    assert metric_on(s, "exact_match") is None


def test_primary_metric_rule():
    assert primary_metric_of({"rank_classification": True, "fixed_labels": True}) == "bal_acc_norm"
    assert primary_metric_of({"rank_classification": True, "fixed_labels": False}) == "acc_norm"
    assert primary_metric_of({"rank_classification": False}) == "exact_match"
    assert primary_metric_of({"rank_classification": True}, "acc") == "acc"
    assert primary_metric_of({"rank_classification": True, "fixed_labels": True}, None, "token") == "bal_acc_norm_token"
    assert primary_metric_of({"rank_classification": True, "fixed_labels": False}, "auto", "token") == "acc_norm_token"
    with pytest.raises(InstaError, match="report.normalisation"):
        primary_metric_of({"rank_classification": True}, None, "bytes")


def test_cells_of_format_1_read_per_token_predictions(tmp_path):
    """A results.json written before the lm-evaluation-harness names: its pred_norm divided by tokens. Read back,
    it is acc_norm_token (same numbers); a char-normalised primary metric is refused with the fix in the message."""
    res = fake_results(30)
    for key, s in res["samples"].items():  # the old form: no format, pred_norm = per token, no per-char predictions
        s.pop("format")
        s["pred_norm"] = s.pop("pred_norm_token")
        s["pred_norm"][0] = (s["pred_norm"][0] + 1) % 2  # differ from the other rules somewhere
    res["cells"][0]["evaluate_metrics"] = {"acc_sum": 0.5, "acc_norm": 0.25, "bal_acc_norm": 0.3}
    res["cells"][0]["primary_metric_evaluate"] = "acc_sum"
    old_acc_norm = {k: sum(p == lab for p, lab in zip(s["pred_norm"], s["label"])) / 30
                    for k, s in res["samples"].items()}
    (tmp_path / "results.json").write_text(json.dumps(res))
    loaded = load_results(tmp_path / "results.json")
    for key, s in loaded["samples"].items():
        assert s["format"] == 2 and "pred_norm" not in s
        assert metric_on(s, "acc_norm_token") == pytest.approx(old_acc_norm[key])
        assert metric_on(s, "acc_norm") is None
    assert loaded["cells"][0]["evaluate_metrics"] == {"acc": 0.5, "acc_norm_token": 0.25, "bal_acc_norm_token": 0.3}
    assert loaded["cells"][0]["primary_metric_evaluate"] == "acc"
    with pytest.raises(InstaError, match="report.normalisation: token"):
        summarize(loaded)
    loaded["config"]["report"]["normalisation"] = "token"
    summ = summarize(loaded)
    assert summ["primary"] == {"bigbench:alpha": "bal_acc_norm_token", "bbh:beta": "acc_norm_token"}
    assert "acc_norm" not in summ["table"]["bbh:beta"]["base"]
    assert summ["table"]["bbh:beta"]["base"]["acc_norm_token"]["mean"] == pytest.approx(
        old_acc_norm["bbh:beta|base"])
    assert "length in **tokens**" in primary_definition(summ)
    write_report(loaded, tmp_path / "out", plots=False, summary=summ)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "`bal_acc_norm_token`" in md and "### acc_norm_token" in md and "### acc_norm:" not in md


def test_summary_seeds_and_paired_verdicts():
    res = fake_results()
    summ = summarize(res)
    assert summ["primary"] == {"bigbench:alpha": "bal_acc_norm", "bbh:beta": "acc_norm"}
    rnd = summ["table"]["bigbench:alpha"]["random"]["bal_acc_norm"]
    assert rnd["n_seeds"] == 3 and rnd["sd"] is not None
    assert summ["average"]["random"]["n_seeds"] == 3
    comp = {(c["method"], c["baseline"]): c for c in summ["comparisons"]}
    assert set(comp) == {("insta-mean", "random"), ("insta-mean", "all"), ("insta-mean", "base"), ("all", "random")}
    assert comp[("all", "random")]["focus"] is False and comp[("insta-mean", "all")]["focus"] is True
    vs_random = comp[("insta-mean", "random")]
    assert vs_random["average"]["verdict"] == "better" and vs_random["average"]["low"] > 0
    assert vs_random["average"]["baseline_seed_sd"] is not None
    assert all(r["verdict"] == "better" for r in vs_random["per_target"])


def test_write_report_files(tmp_path):
    paths = write_report(fake_results(), tmp_path)
    for name in ("results.json", "results.md", "report.html", "bars_primary.png", "bars_gold_logprob.png",
                 "selection_heatmap.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "bars_primary.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "results.md").read_text()
    assert "length in **characters** as lm-evaluation-harness's `acc_norm`" in md
    assert "### acc_norm: " in md and "### acc_norm_token: " in md and "### acc: " in md
    assert "| target | metric | base | insta-mean | all | random |" in md
    assert " ± " in md and "**average**" in md
    assert "insta-mean vs random" in md and "P3 selection table" in md and "paws (0.500)" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "src='http" not in html and 'src="http' not in html and "<link" not in html  # self-contained
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"]["comparisons"] and data["name"] == "fake"
    assert set(paths) >= {"results.json", "results.md", "report.html"}


def test_dry_run_banner_and_missing_cells(tmp_path):
    res = fake_results(20)
    res["backend"] = "dry-run"
    res["cells"] = [c for c in res["cells"] if not (c["target"] == "bbh:beta" and c["label"] == "all")]
    res["missing_cells"] = ["bbh:beta/all"]
    write_report(res, tmp_path, plots=False)
    md = (tmp_path / "results.md").read_text()
    assert "DRY RUN" in md and "Missing cells: bbh:beta/all" in md
    summ = json.loads((tmp_path / "results.json").read_text())["summary"]
    vs_all = next(c for c in summ["comparisons"] if c["baseline"] == "all")
    assert vs_all["average"] is None and len(vs_all["per_target"]) == 1


def test_verdict_with_identical_seeds_says_so():
    from insta.report import verdict_lines

    comp = {"method": "insta-mean", "baseline": "random", "focus": True,
            "average": {"diff": 0.05, "low": 0.01, "high": 0.09, "verdict": "better", "baseline_seed_sd": 0.0},
            "per_target": [{"diff": 0.05, "verdict": "better"}]}
    line = verdict_lines({"comparisons": [comp]})[0]
    assert "inf" not in line and "scored the same under every seed" in line
    comp["average"]["baseline_seed_sd"] = 0.02
    assert "2.5x that spread" in verdict_lines({"comparisons": [comp]})[0]


def test_compute_line_sums_the_cells_and_names_each_stretch_of_a_resumed_run():
    from insta.report import _compute_line

    res = fake_results(10)
    res["trained_models"] = [{"seconds": 60.0, "finished": "2026-11-24T09:30:00"},
                             {"seconds": 60.0, "finished": "2026-11-30T15:50:00"}]
    for i, c in enumerate(res["cells"]):
        c["eval_seconds"] = 3.0
        c["finished"] = "2026-11-24T10:00:00" if i % 2 else "2026-11-30T15:59:00"
    n_cells = len({c["eval_key"] for c in res["cells"]})
    res["cells"].append(dict(res["cells"][0], label="another-method"))  # one model shared by two methods
    line = _compute_line(res)
    assert f"2 trainings (2 min 00 s) and {n_cells} evaluations" in line
    assert "2 stretches (2026-11-24 09:30-10:00; 2026-11-30 15:50-15:59)" in line and "resumed" in line
    for c in res["cells"]:
        c["finished"] = "2026-11-30T15:59:00"
    res["trained_models"] = []
    assert "stretches" not in _compute_line(res)


def test_hand_written_notes_are_included_in_both_renderings(tmp_path):
    (tmp_path / "notes.md").write_text("First **finding**.\n\nSecond paragraph with `code`.\n")
    write_report(fake_results(10), tmp_path, plots=False)
    md = (tmp_path / "results.md").read_text()
    assert md.index("## Run") < md.index("## Reading these results") < md.index("## Verdict")
    assert "First **finding**." in md and "Second paragraph with `code`." in md
    html = (tmp_path / "report.html").read_text()
    assert "First <b>finding</b>." in html and "<code>code</code>" in html
