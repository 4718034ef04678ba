"""insta transfer: the matrix against a hand computation, caching and resume, reliability, NDCG / Regret@k on
hand-worked rankings, user matrices (read and refused), and the CLI, on the fixture tasks with fake backends."""
import json
import math
from pathlib import Path

import pytest
import yaml

from insta import cli
from insta.errors import InstaError
from insta.engine import DryRunBackend
from insta.transfer import (
    TransferMatrix,
    config_from_dict,
    load_transfer_config,
    ndcg,
    read_matrix,
    regret_at_k,
    reliability,
    run_transfer,
)
from insta.transfer.runner import TransferRun
from insta.matrix.scoring import random_expectation

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "transfer-tiny.yaml"
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"
PUBLISHED = REPO / "tests" / "fixtures" / "transfer" / "published.csv"


def quiet(msg):
    pass


def tiny(tmp_path, **over):
    return load_transfer_config(TINY, {"data_dir": str(DATA), "out": str(tmp_path / "out"), **over})


class TableBackend(DryRunBackend):
    """A fake model whose gold-answer NLL per token on a target is a known function of what it was trained on:
    base 2.0 everywhere; a model trained on source s (seed d) has NLL 2.0 - EFFECT[s] - 0.01 * d on every target,
    and always ranks option 0 first."""

    name = "table"
    EFFECT = {"arith": 0.3, "plant_facts": 0.1, "capitals": -0.2, "color_names": 0.0}

    def train(self, records, out_dir, model, options):
        res = super().train(records, out_dir, model, options)
        (Path(res["model_dir"]) / "seed.txt").write_text(str(options["seed"]))
        return res

    def load(self, model_dir_or_name):
        h = super().load(model_dir_or_name)
        p = Path(model_dir_or_name) / "seed.txt"
        h["seed"] = int(p.read_text()) if p.is_file() else None
        return h

    def evaluate(self, handle, examples, options, task_id, catalog):
        self.n_eval += 1
        src = next(iter(handle["counts"]), None)
        nll = 2.0 if src is None else 2.0 - self.EFFECT[src.split("/")[0]] - 0.01 * handle["seed"]
        samples = []
        for ex in examples:
            n = len(ex.options)
            sums = [-nll * 2 if i == ex.label else -9.0 for i in range(n)]  # gold option: 2 tokens
            samples.append({"type": "rank", "id": ex.id, "options": list(ex.options), "label": ex.label,
                            "scores_sum": sums, "scores_calibrated": sums, "n_tokens": [2] * n})
        return {"samples": samples}


def test_matrix_matches_a_hand_computation(tmp_path):
    cfg = tiny(tmp_path)
    res = run_transfer(cfg, backend=TableBackend(), log=quiet, progress=False, report=False)
    assert res["complete"]
    rows = json.loads((Path(cfg.out) / "matrix.json").read_text())["rows"]
    nll = [r for r in rows if r["metric"] == "nll_per_token"]
    # every (target, source, seed) once: 2 targets x 4 sources x 2 seeds
    assert len(nll) == 2 * 4 * 2
    for r in nll:
        effect = TableBackend.EFFECT[r["source"]] + 0.01 * r["seed"]
        assert r["base_value"] == pytest.approx(2.0)
        assert r["value"] == pytest.approx(2.0 - effect)
        assert r["transfer"] == pytest.approx(effect)  # base - trained: positive = better
    import pandas as pd

    df = pd.read_csv(Path(cfg.out) / "matrix.csv")
    assert list(df.columns) == ["target", "source", "seed", "metric", "value", "base_value", "transfer"]
    assert len(df) == len(rows)
    # seeds agree on the order of sources: perfectly reliable
    rel = res["reliability"]["nll_per_token"]
    assert all(r["reliable"] and r["reliability"] == pytest.approx(1.0) for r in rel.values())


def test_second_run_does_no_work_and_a_killed_run_resumes(tmp_path, killed_after):
    cfg = tiny(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(cfg, backend=killed_after(TableBackend(), 7), log=quiet, progress=False, report=False)
    cells = Path(cfg.out) / "cells"
    first = {p.name: p.read_text() for p in cells.glob("*.json")}
    assert len(first) == 7
    b = TableBackend()
    run_transfer(cfg, backend=b, log=quiet, progress=False, report=False)
    assert b.n_eval == 18 - 7  # only the missing cells
    assert b.n_train == 8 - 3  # units finished before the kill (base + 3 models) are not retrained
    assert all((cells / name).read_text() == text for name, text in first.items())  # finished cells untouched
    b2 = TableBackend()
    res = run_transfer(cfg, backend=b2, log=quiet, progress=False, report=False)
    assert b2.n_eval == 0 and b2.n_train == 0 and res["complete"]
    assert not list((Path(cfg.out) / "models").iterdir())  # weights discarded once evaluated


def test_plan_counts_work_and_estimates_time(tmp_path):
    cfg = tiny(tmp_path)
    run = TransferRun(cfg, backend=TableBackend(), log=quiet)
    run.prepare()
    plan = run.plan()
    assert plan["n_units"] == 1 + 4 * 2 and plan["cells"] == 18 and plan["cells_done"] == 0
    assert plan["eta_seconds"] > 0
    run_transfer(cfg, backend=TableBackend(), log=quiet, progress=False, report=False)
    assert run.plan()["cells_done"] == 18 and run.plan()["units_to_train"] == 0


def test_a_seed_changes_sample_and_training_seed(tmp_path):
    run = TransferRun(tiny(tmp_path), backend=TableBackend(), log=quiet)
    run.prepare()
    src = run.sources[0]
    a, b = run.records(src, 0), run.records(src, 1)
    assert [r["id"] for r in a] != [r["id"] for r in b]
    assert run.records(src, 0) == a  # deterministic
    assert run.job(src, 0).train["seed"] == 0 and run.job(src, 1).train["seed"] == 1
    assert run.model_key(src, 0) != run.model_key(src, 1)


def test_config_is_type_checked_on_load(tmp_path):
    import yaml

    raw = yaml.safe_load(TINY.read_text())
    for bad, msg in ((("seeds", "abc"), "seeds"), (("instances", "many"), "instances"),
                     (("keep_models", "false"), "keep_models"), (("model", 5), "model"),
                     (("seed", "abc"), "seed"), (("sources", {"n": 1}), "sources.n"),
                     (("scoring", {"bootstrap": "lots"}), "scoring.bootstrap"),
                     (("train", {"epochs": "one"}), "train.epochs"), (("eval", {"n": 0}), "eval.n"),
                     (("executor", "spark"), "executor"), (("nonsense", 1), "nonsense")):
        with pytest.raises(InstaError, match=msg):
            config_from_dict({**raw, bad[0]: bad[1]})


# ---------------------------------------------------------------- scoring, hand-worked


def test_ndcg_hand_worked():
    # gold transfer a=3, b=1, c=2 -> relevance a=3, c=2, b=1; gains 7, 1, 3
    ideal = 7 + 3 / math.log2(3) + 1 / 2
    assert ndcg([3, 1, 2], [2, 0, 1]) == pytest.approx(1.0)  # a, c, b: the gold order
    # method order b, a, c
    assert ndcg([3, 1, 2], [4, 5, 1]) == pytest.approx((1 + 7 / math.log2(3) + 3 / 2) / ideal)
    # every source tied: each gets the mean discount of positions 0..2
    mean_disc = (1 + 1 / math.log2(3) + 1 / 2) / 3
    assert ndcg([3, 1, 2], [0, 0, 0]) == pytest.approx(11 * mean_disc / ideal)
    # tied gold values share the best rank: a=c=2 -> relevance 3, 3; b -> 1
    assert ndcg([2, 1, 2], [1, 0, 1]) == pytest.approx(1.0)


def test_regret_hand_worked():
    perf = [0.5, 0.2, 0.4]
    assert regret_at_k(perf, [3, 2, 1], 1) == pytest.approx(0.0)
    assert regret_at_k(perf, [2, 3, 1], 1) == pytest.approx((0.5 - 0.2) / 0.5)
    # a and b tied for the only slot: expected top-1 = 0.35
    assert regret_at_k(perf, [3, 3, 1], 1) == pytest.approx((0.5 - 0.35) / 0.5)
    # k = 2: gold top-2 mean 0.45; method picks b and c
    assert regret_at_k(perf, [0, 2, 1], 2) == pytest.approx((0.45 - 0.3) / 0.45)


def test_random_expectation_matches_the_all_tied_ranking():
    tr = [0.9, 0.1, 0.5, -0.3, 0.2, 0.0]
    exact = ndcg(tr, [0] * len(tr))
    sampled = random_expectation(tr, tr, 2, draws=4000, seed=1)
    assert sampled["ndcg"] == pytest.approx(exact, abs=0.01)


def test_reliability_flags_seeds_that_disagree():
    rows = []
    for s, (v0, v1) in {"a": (0.3, 0.31), "b": (0.1, 0.12), "c": (-0.2, -0.19), "d": (0.0, 0.02)}.items():
        rows += [{"target": "agree", "source": s, "seed": 0, "metric": "m", "transfer": v0},
                 {"target": "agree", "source": s, "seed": 1, "metric": "m", "transfer": v1},
                 {"target": "noise", "source": s, "seed": 0, "metric": "m", "transfer": v0},
                 {"target": "noise", "source": s, "seed": 1, "metric": "m", "transfer": -v1}]
    rel = reliability(TransferMatrix(rows), "m", threshold=0.5)
    assert rel["agree"]["reliable"] and rel["agree"]["r"] > 0.99
    assert not rel["noise"]["reliable"] and rel["noise"]["r"] < 0


# ---------------------------------------------------------------- user matrices and the CLI


def test_user_matrix_is_read_and_scored_through_the_cli(tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = cli.main(["eval-selection", "--transfer", str(PUBLISHED), "--catalog", "bigbench", "--data-dir",
                     str(DATA), "--encoder", "hashing", "--target-samples", "4", "--library-size", "8",
                     "--regret-k", "2", "--json", str(out), "-q"])
    assert code == 0
    res = json.loads(out.read_text())
    assert set(res["targets_scored"]) == {"bigbench:animal_facts", "bbh:sports_understanding"}
    for m in ("insta-mean", "insta-max", "insta-topk-vote", "insta-format", "hybrid", "lexical", "roe", "dsir", "all",
              "random"):
        assert 0 < res["summary"][m]["ndcg"]["mean"] <= 1
    # "all" ties every source: exactly the random expectation, up to the sampling of random
    assert res["summary"]["all"]["ndcg"]["mean"] == pytest.approx(res["summary"]["random"]["ndcg"]["mean"],
                                                                  abs=0.03)
    assert "insta-mean - random" in res["paired"]


def test_methods_file_chooses_the_scored_variants(tmp_path):
    methods = tmp_path / "methods.yaml"
    methods.write_text("- insta-mean\n"
                       "- {method: insta-mean, label: insta-max-variant, options: {aggregation: max}}\n"
                       "- {method: hybrid, label: hybrid-0.25, options: {weight: 0.25}}\n")
    out = tmp_path / "scores.json"
    code = cli.main(["eval-selection", "--transfer", str(PUBLISHED), "--catalog", "bigbench", "--data-dir",
                     str(DATA), "--encoder", "hashing", "--target-samples", "4", "--library-size", "8",
                     "--methods", str(methods), "--json", str(out), "-q"])
    assert code == 0
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"insta-mean", "insta-max-variant", "hybrid-0.25", "random"}
    params = {m["label"]: m["params"] for m in res["methods"]}
    assert params["insta-max-variant"]["aggregation"] == "max" and params["hybrid-0.25"]["weight"] == 0.25


@pytest.mark.parametrize("content, msg", [
    ("- no-such-method\n", "unknown selection method"),
    ("- {method: hybrid, options: {weight: 3}}\n", "weight must be"),
    ("- insta-mean\n- insta-mean\n", "used twice"),
    ("- {method: insta-mean, colour: red}\n", "unknown key"),
    ("{}\n", "non-empty list"),
    ("- [\n", "not valid YAML"),
])
def test_bad_methods_file_is_one_line(tmp_path, capsys, content, msg):
    methods = tmp_path / "methods.yaml"
    methods.write_text(content)
    code = cli.main(["eval-selection", "--transfer", str(PUBLISHED), "--catalog", "bigbench", "--data-dir",
                     str(DATA), "--encoder", "hashing", "--methods", str(methods)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_transfer_config_checks_scoring_methods_when_read():
    from insta.transfer.config import config_from_dict

    with pytest.raises(InstaError, match="scoring.methods"):
        config_from_dict({"pool": {"catalog": "bigbench"}, "targets": ["bbh:navigate"],
                          "scoring": {"methods": [{"method": "insta-mean", "options": {"aggregation": "median"}}]}})


def test_scoring_methods_may_name_a_methods_file(tmp_path, monkeypatch):
    """``scoring.methods`` as a path reads the file (a pre-registered list, scored exactly: no INSTA-aligned rows
    are added beside it), checked when the config is read; a missing or bad file is one error."""
    from types import SimpleNamespace

    from insta.evaluators import methods_vs_matrix
    from insta.transfer.config import config_from_dict
    from insta.transfer.results import score_matrix

    listed = tmp_path / "methods.yaml"
    listed.write_text("- insta-mean\n- {method: insta-mean, label: insta-max, options: {aggregation: max}}\n")
    raw = {"pool": {"catalog": "bigbench"}, "targets": ["bbh:navigate"], "scoring": {"methods": str(listed)}}
    seen = []
    monkeypatch.setattr(methods_vs_matrix, "evaluate_methods_on_matrix",
                        lambda *a, **kw: seen.append([label for label, _, _ in kw["methods"]]))
    monkeypatch.setattr("insta.align.targets.ensure_aligned_encoder", lambda *a, **kw: True)  # an aligned encoder
    cfg = config_from_dict({**raw, "scoring": {**raw["scoring"], "aligned_encoder": str(tmp_path)}})
    score_matrix(SimpleNamespace(cfg=cfg, catalog=lambda name: None, targets=[]), matrix=None)
    assert seen == [["insta-mean", "insta-max"]]
    cfg = config_from_dict({**raw, "scoring": {"aligned_encoder": str(tmp_path)}})
    score_matrix(SimpleNamespace(cfg=cfg, catalog=lambda name: None, targets=[]), matrix=None)
    assert "insta-aligned-max" in seen[-1] and "roe" in seen[-1]  # no list given: the defaults and aligned rows
    with pytest.raises(InstaError, match="cannot read methods file"):
        config_from_dict({**raw, "scoring": {"methods": str(tmp_path / "none.yaml")}})
    (tmp_path / "typo.yaml").write_text("- insta-meen\n")
    with pytest.raises(InstaError, match="unknown selection method 'insta-meen'"):
        config_from_dict({**raw, "scoring": {"methods": str(tmp_path / "typo.yaml")}})
    v2 = yaml.safe_load((REPO / "configs/transfer-v2-bigbench-smollm2.yaml").read_text())["scoring"]["methods"]
    assert len(methods_vs_matrix.read_method_specs(str(REPO / v2), build=False)) >= 10


def test_scoring_seed_is_the_one_the_report_draws_target_inputs_with(monkeypatch):
    """``scoring.seed`` (default: the run's seed) reaches the method scoring, so a config can draw RoE/DSIR/hybrid
    inputs with the seed `insta eval-selection --transfer` uses (one matrix, one number everywhere)."""
    from types import SimpleNamespace

    from insta.evaluators import methods_vs_matrix
    from insta.transfer.config import config_from_dict
    from insta.transfer.results import score_matrix

    raw = {"pool": {"catalog": "bigbench"}, "targets": ["bbh:navigate"], "seed": 42,
           "scoring": {"methods": ["insta-mean"]}}
    seen = []
    monkeypatch.setattr(methods_vs_matrix, "evaluate_methods_on_matrix", lambda *a, **kw: seen.append(kw["seed"]))
    for scoring, want in (({}, 42), ({"seed": 0}, 0), ({"seed": 7}, 7)):
        cfg = config_from_dict({**raw, "scoring": {**raw["scoring"], **scoring}})
        run = SimpleNamespace(cfg=cfg, catalog=lambda name: None, targets=[])
        score_matrix(run, matrix=None)
        assert seen[-1] == want
    with pytest.raises(InstaError, match="scoring.seed"):
        config_from_dict({**raw, "scoring": {"seed": "zero"}})
    for path in ("configs/transfer-v2-bigbench-smollm2.yaml", "configs/transfer-v2-gpu.yaml"):
        assert yaml.safe_load((REPO / path).read_text())["scoring"]["seed"] == 0


@pytest.mark.parametrize("content, msg", [
    ("target,source\nx,y\n", "needs 'transfer'"),
    ("target,source,transfer\nx,y,abc\n", "not a number"),
    ("target,source,transfer\nx,,0.1\n", "missing 'source'"),
    ("target,source,transfer\nx,y,0.1\nx,y,0.2\n", "duplicate row"),
    ("target,source,transfer\n", "holds no rows"),
])
def test_malformed_matrix_is_refused_with_one_line(tmp_path, capsys, content, msg):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code = cli.main(["eval-selection", "--transfer", str(bad), "--catalog", "bigbench", "--data-dir", str(DATA)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and msg in err and len(err.splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(InstaError, match=msg):
        read_matrix(bad)


@pytest.mark.parametrize("content, msg", [
    ('{"rows": ' * 3000, "nested too deeply"),
    ('{"rows": 5}', "expected a list of row objects"),
    ('[{"target": "x", "source": "y", "transfer": "nan"}]', "not finite"),
    ("\xff\xfe", "not UTF-8"),
])
def test_malformed_json_matrix_is_refused(tmp_path, content, msg):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content.encode("latin-1"))
    with pytest.raises(InstaError, match=msg):
        read_matrix(bad)


def test_matrix_with_unknown_sources_is_refused(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text("target,source,transfer\nbigbench:animal_facts,no_such_task,0.1\n"
                   "bigbench:animal_facts,arith,0.2\n")
    code = cli.main(["eval-selection", "--transfer", str(bad), "--catalog", "bigbench", "--data-dir", str(DATA)])
    assert code != 0 and "no_such_task" in capsys.readouterr().err


def test_cli_plan_run_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["transfer", str(TINY), "--data-dir", str(DATA), "--out", str(out), "-q"]
    assert cli.main(argv + ["--plan", "--json", str(tmp_path / "plan.json")]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["cells_done"] == 0 and len(plan["sources"]) == 4
    assert cli.main(argv) == 0
    for name in ("matrix.csv", "matrix.json", "results.json", "report.md", "report.html", "transfer_heatmap.png",
                 "method_scores.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert md.index("method_scores.png") < md.index("Reliability of the matrix")  # figures first
    assert cli.main(argv + ["--plan", "--json", str(tmp_path / "plan2.json")]) == 0
    assert json.loads((tmp_path / "plan2.json").read_text())["cells_done"] == 18


def test_spread_sources_cover_keywords():
    from insta.catalogs.base import Catalog
    from insta.records import Task
    from insta.transfer.runner import spread_sources

    tasks = [Task("a1", ["x"], "c", keywords=["arithmetic"]), Task("a2", ["x"], "c", keywords=["arithmetic"]),
             Task("b1", ["x"], "c", keywords=["translation"]), Task("c1", ["x"], "c", keywords=["logic", "arithmetic"])]
    chosen = spread_sources(Catalog("c", tasks), 3, seed=0)
    assert set(chosen) >= {"b1", "c1"} and len(chosen) == 3
    assert spread_sources(Catalog("c", tasks), 3, seed=0) == chosen


def test_report_answers_the_questions_from_the_paired_differences():
    from insta.evaluators.matrix_report import _answers

    def row(mean, lo, hi):
        return {"ndcg": {"mean": mean, "lo": lo, "hi": hi}}

    sc = {"summary": {m: {"ndcg": {"mean": v, "lo": v - 0.1, "hi": v + 0.1}}
                      for m, v in (("insta-mean", 0.4), ("insta-max", 0.5), ("random", 0.36), ("roe", 0.55))},
          "paired": {"insta-mean - random": row(0.04, -0.01, 0.09), "insta-mean - roe": row(-0.15, -0.25, -0.05),
                     "insta-max - insta-mean": row(0.1, 0.02, 0.2)},
          "reliability": {"a": {"reliability": 0.97, "reliable": True}, "b": {"reliability": 0.3, "reliable": False}}}
    text = " ".join(_answers(sc))
    assert "random +0.040 [-0.010, +0.090] (not separated)" in text
    assert "roe -0.150 [-0.250, -0.050] (below)" in text
    assert "The best is insta-max" in text and "+0.100 [+0.020, +0.200] (above)" in text
    assert "1 of 2 targets" in text and "0.30 to 0.97" in text
