"""Report generation on a tiny hand-made grid: metrics from per-example arrays, mean ± sd over seeds, paired
bootstrap verdicts, the figures (nothing clipped), and the files (JSON, Markdown and the HTML made from it, PNG
figures) rendered in headless Chromium."""
import json
import random
from pathlib import Path

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
    preds_sum = [("yes", "no", "maybe")[p] for p in s["pred_sum"]]
    assert metric_on(s, "bal_acc") == pytest.approx(balanced_accuracy(preds_sum, s["gold"]))
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
    for s in res["samples"].values():  # the old form: no format, pred_norm = per token, no per-char predictions
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
        assert s["format"] == 3 and "pred_norm" not in s
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
    from insta.report import FIGURES  # noqa: F401  (the package re-exports what document.py defines)

    paths = write_report(fake_results(), tmp_path)
    for name in ("results.json", "results.md", "report.html", "differences.png", "per_target_primary.png",
                 "per_target_gold_logprob.png", "selection_overlap.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "differences.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "results.md").read_text()
    # at a glance: the figure, then the per-target table, then the verdict table, before anything else
    order = [md.index(x) for x in ("## At a glance", "![differences.png](differences.png)",
                                   "| target | metric | base | insta-mean | all | random |",
                                   "| method | metric | vs random | vs all | vs base |", "## Paired comparisons")]
    assert order == sorted(order)
    assert "length in **characters** as lm-evaluation-harness's `acc_norm`" in md
    assert "### acc_norm: " in md and "### acc_norm_token: " in md and "### acc: " in md
    assert " ± " in md and "**average**" in md and "95% percentile intervals" in md
    assert "| insta-mean | primary | +" in md and "▲" in md
    assert "P3 selection table" in md and "paws (0.500)" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "src='http" not in html and 'src="http' not in html and "<link" not in html  # self-contained
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"]["comparisons"] and data["name"] == "fake"
    assert data["summary"]["method_intervals"]["primary"]["average"]["insta-mean"][0] > 0.5
    assert set(paths) >= {"results.json", "results.md", "report.html"}


def test_html_is_the_markdown_rendered_and_data_never_becomes_html(tmp_path):
    """One source: the page body is markdown-it's rendering of results.md; text from data (a hostile task id)
    is shown, not executed, in both."""
    from insta.report import markdown_to_html

    res = fake_results(10)
    for c in res["cells"]:
        if c["label"] == "all":
            c["selected"] = ["<script>alert(1)</script>", "a|b"]
    write_report(res, tmp_path, plots=False)
    md = (tmp_path / "results.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert markdown_to_html(md) in html
    assert "<script>" not in md and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a|b" in html
    assert "<details><summary>" in html and "<table>" in html and "<strong>average</strong>" in html


def test_figures_do_not_clip_and_show_intervals():
    from insta.report.plots import forest_figure, overlap_figure, per_target_figure

    res = fake_results(30)
    summ = summarize(res)
    fig = forest_figure(summ, "fake")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ends = [x for c in summ["comparisons"] if c["focus"] and c["average"] for x in (c["average"]["low"],
                                                                                   c["average"]["high"])]
    assert lo <= min(ends) and max(ends) <= hi and lo <= 0 <= hi
    assert len(fig.axes) == 2  # primary and gold log-prob
    fig = per_target_figure(summ, res)
    for ax, t in zip(fig.axes, res["targets"]):
        lo, hi = ax.get_xlim()
        cis = summ["method_intervals"]["primary"][t["id"]]
        assert all(lo <= a and b <= hi for a, b in cis.values()), t["id"]
        assert lo <= t["chance"] <= hi
        assert len(ax.lines) >= 2 * len(cis)  # an interval and a point per method
    assert overlap_figure(summ["selection_overlap"]).axes


def test_selection_overlap_is_mean_jaccard_over_targets():
    from insta.report import selection_overlap

    res = fake_results(10)
    for c in res["cells"]:
        if c["label"] == "insta-mean":
            c["selected"] = ["p1", "p3"] if c["target"] == "bigbench:alpha" else ["p1", "p2"]
    ov = selection_overlap(res)
    assert ov["labels"] == ["insta-mean", "random-s0", "random-s1", "random-s2"]  # no base, no all
    m = dict(zip(ov["labels"], ov["jaccard"]))
    assert m["insta-mean"][0] == 1.0 and m["random-s0"][1] == 1.0
    assert m["insta-mean"][1] == pytest.approx((1 / 3 + 1) / 2, abs=1e-4)


def test_bca_interval_option(tmp_path):
    """report.interval: bca changes the intervals only (same differences), says so, and keeps its p-value in line
    with its interval; percentile stays the default."""
    res = fake_results(40)
    pct = summarize(res)
    res["config"]["report"]["interval"] = "bca"
    bca = summarize(res)
    assert pct["interval"] == "percentile" and bca["interval"] == "bca"
    for a, b in zip(pct["comparisons"], bca["comparisons"]):
        for ra, rb in zip(a["per_target"], b["per_target"]):
            assert ra["diff"] == rb["diff"]
            assert (rb["low"] > 0 or rb["high"] < 0) == (rb["p_value"] < 0.05) or abs(rb["p_value"] - 0.05) < 0.01
    write_report(res, tmp_path, plots=False, summary=bca)
    assert "95% BCa (bias-corrected and accelerated) intervals" in (tmp_path / "results.md").read_text()
    res["config"]["report"]["interval"] = "studentized"
    with pytest.raises(InstaError, match="report.interval must be one of"):
        summarize(res)


def test_report_renders_in_headless_chromium(tmp_path):
    """The HTML page as a browser shows it (scripts/screenshot_report.py, which made the committed screenshot): the
    title, the lead figure's coloured intervals and the tables are drawn, not a blank or broken page."""
    import shutil
    import subprocess
    import sys

    assert any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), \
        "no chromium on this machine: scripts/test.sh installs it (apt-get install chromium)"
    import matplotlib.image as mpimg
    import numpy as np

    write_report(fake_results(30), tmp_path)
    shot = tmp_path / "shot.png"
    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "report.html"), str(shot), "--height", "1400",
                    "--colors", "0"], check=True, capture_output=True, timeout=180)
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (1400, 1200)
    ink = (img.mean(axis=2) < 0.9).mean(axis=1)  # share of non-white pixels per row
    assert ink[:150].max() > 0.05  # the title
    colour = np.ptp(img, axis=2) > 0.3  # saturated pixels: the figure's coloured intervals
    assert colour[150:900].sum() > 500
    lines = (img.mean(axis=2) < 0.85).mean(axis=1) > 0.5  # long horizontal rules: table borders
    assert lines.sum() >= 4


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


def test_verdict_table_marks_and_seed_spread():
    from insta.report import verdict_table

    comp = {"method": "insta-mean", "baseline": "random", "focus": True,
            "average": {"diff": 0.05, "low": 0.01, "high": 0.09, "verdict": "better", "baseline_seed_sd": 0.0},
            "per_target": [{"diff": 0.05, "verdict": "better"}]}
    same = {"method": "insta-mean", "baseline": "all", "focus": True, "per_target": [],
            "average": {"diff": 0.0, "low": 0.0, "high": 0.0, "verdict": "same model (identical selection)"}}
    header, rows = verdict_table({"comparisons": [comp, same]})
    assert header == ["method", "metric", "vs random", "vs all"]
    assert rows == [["insta-mean", "primary", "+0.050 [+0.010,\u00a0+0.090]\u00a0▲", "= same model"]]  # sd 0: no ratio
    comp["average"]["baseline_seed_sd"] = 0.02
    comp["average"].update(verdict="worse", diff=-0.05, low=-0.09, high=-0.01)
    assert verdict_table({"comparisons": [comp]})[1][0][2] == "-0.050 [-0.090,\u00a0-0.010]\u00a0▼ (2.5\u00a0sd)"


def test_compute_line_sums_the_cells_and_names_each_stretch_of_a_resumed_run():
    from insta.report import compute_line

    res = fake_results(10)
    res["trained_models"] = [{"seconds": 60.0, "finished": "2026-11-24T09:30:00"},
                             {"seconds": 60.0, "finished": "2026-11-30T15:50:00"}]
    for i, c in enumerate(res["cells"]):
        c["eval_seconds"] = 3.0
        c["finished"] = "2026-11-24T10:00:00" if i % 2 else "2026-11-30T15:59:00"
    n_cells = len({c["eval_key"] for c in res["cells"]})
    res["cells"].append(dict(res["cells"][0], label="another-method"))  # one model shared by two methods
    line = compute_line(res)
    assert f"2 trainings (2 min 00 s) and {n_cells} evaluations" in line
    assert "2 stretches (2026-11-24 09:30-10:00; 2026-11-30 15:50-15:59)" in line and "resumed" in line
    for c in res["cells"]:
        c["finished"] = "2026-11-30T15:59:00"
    res["trained_models"] = []
    assert "stretches" not in compute_line(res)


def test_hand_written_notes_are_included_in_both_renderings(tmp_path):
    (tmp_path / "notes.md").write_text("First **finding**.\n\nSecond paragraph with `code`.\n")
    write_report(fake_results(10), tmp_path, plots=False)
    md = (tmp_path / "results.md").read_text()
    assert md.index("### Verdict") < md.index("## Reading these results") < md.index("## Paired comparisons")
    assert "First **finding**." in md and "Second paragraph with `code`." in md
    html = (tmp_path / "report.html").read_text()
    assert "First <strong>finding</strong>." in html and "<code>code</code>" in html
