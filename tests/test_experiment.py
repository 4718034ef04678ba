"""The experiment runner on the tiny fixture grid (configs/tiny.yaml) with the dry-run backend: validation before
any work, the pool rules, the cell cache (a finished grid does no work; an interrupted cell is redone), shared
models, model clean-up, and the CLI."""
import json
from pathlib import Path

import pytest

from insta.errors import InstaError
from insta.engine import DryRunBackend
from insta.experiment import (
    Experiment,
    config_from_dict,
    load_config,
    run_experiment,
)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"


def tiny(tmp_path, **over):
    return load_config(TINY, {"data_dir": str(DATA), "out": str(tmp_path / "out"), **over})


def quiet(msg):
    pass


def raw_tiny(tmp_path, **over):
    import yaml

    raw = yaml.safe_load(TINY.read_text())
    raw.update({"data_dir": str(DATA), "out": str(tmp_path / "out")})
    raw.update(over)
    return raw


def test_tiny_grid_runs_and_a_second_run_does_no_work(tmp_path):
    cfg = tiny(tmp_path)
    b1 = DryRunBackend()
    res = run_experiment(cfg, backend=b1, log=quiet, report=False)
    out = Path(cfg.out)
    n_cells = len(list((out / "cells").glob("*.json")))
    assert b1.n_eval == n_cells > 0
    assert not res["missing_cells"]
    # every (target, method) of the grid is there, base included
    labels = {c["label"] for c in res["cells"]}
    assert labels == {"base", "insta-mean", "insta-topk-vote", "all", "random-s0", "random-s1", "random-s2", "roe",
                      "lexical", "dsir"}
    assert len(res["cells"]) == 2 * 10
    # models that do not depend on the target are trained once and shared
    all_keys = {c["model_key"] for c in res["cells"] if c["label"] == "all"}
    assert len(all_keys) == 1
    for s in range(3):
        assert len({c["model_key"] for c in res["cells"] if c["label"] == f"random-s{s}"}) == 1
    assert b1.n_train == len({c["model_key"] for c in res["cells"] if c["label"] != "base"})
    # the same budget for every method
    for c in res["cells"]:
        if c["label"] != "base":
            assert sum(c["allocation"].values()) == cfg.n_total
    # trained models are removed once evaluated
    assert not any((out / "models").iterdir())
    b2 = DryRunBackend()
    res2 = run_experiment(cfg, backend=b2, log=quiet, report=False)
    assert (b2.n_train, b2.n_eval) == (0, 0)
    assert res2["stats"]["cells_cached"] == n_cells
    assert [c["eval_key"] for c in res2["cells"]] == [c["eval_key"] for c in res["cells"]]
    # the returned results carry the summary when the report is written
    res3 = run_experiment(cfg, backend=DryRunBackend(), log=quiet)
    assert set(res3["summary"]["average"]) >= {"insta-mean", "random", "all"}
    assert res3["summary"]["average"]["random"]["n_seeds"] == 3
    # the report keeps describing the run that did the work, not the rerun that found everything cached
    assert res2["working_run"]["stats"]["evaluated"] == n_cells
    assert res2["working_run"]["seconds_total"] == res["seconds_total"]


def test_an_interrupted_run_resumes_and_redoes_only_the_missing_cells(tmp_path, killed_after):
    cfg = tiny(tmp_path)
    first = killed_after(DryRunBackend(), 5)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, backend=first, log=quiet, report=False)
    out = Path(cfg.out)
    assert len(list((out / "cells").glob("*.json"))) == 5
    assert not list((out / "cells").glob(".*.tmp"))  # no torn cell file
    b = DryRunBackend()
    res = run_experiment(cfg, backend=b, log=quiet, report=False)
    total = len(list((out / "cells").glob("*.json")))
    assert b.n_eval == total - 5
    assert not res["missing_cells"]
    # the model being evaluated when the run stopped was kept and reused, not retrained
    n_models = len({c["model_key"] for c in res["cells"] if c["label"] != "base"})
    assert b.n_train == n_models - first.n_train
    # a cell deleted by hand (or lost) is redone, and only it
    victim = next((out / "cells").glob("*.json"))
    victim.unlink()
    b3 = DryRunBackend()
    run_experiment(cfg, backend=b3, log=quiet, report=False)
    assert b3.n_eval == 1 and b3.n_train <= 1 and victim.is_file()


def test_a_half_trained_model_dir_is_cleaned_and_keep_models_keeps_them(tmp_path):
    cfg = tiny(tmp_path, keep_models=True)
    stale = Path(cfg.out) / "models" / "deadbeef"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    run_experiment(cfg, backend=DryRunBackend(), log=quiet, report=False)
    assert not stale.exists()
    assert any((Path(cfg.out) / "models").iterdir())


def test_changing_a_training_option_invalidates_only_trained_cells(tmp_path):
    cfg = tiny(tmp_path)
    run_experiment(cfg, backend=DryRunBackend(), log=quiet, report=False)
    cfg2 = tiny(tmp_path, train={"epochs": 2, "batch_size": 4})
    b = DryRunBackend()
    res = run_experiment(cfg2, backend=b, log=quiet, report=False)
    n_base = sum(1 for c in res["cells"] if c["label"] == "base")
    assert b.n_eval == len({c["eval_key"] for c in res["cells"]}) - n_base  # base cells reused


def test_pool_rules_and_target_split(tmp_path):
    cfg = tiny(tmp_path)
    exp = Experiment(cfg, backend=DryRunBackend(), log=quiet)
    exp.prepare()
    pool = exp.pool.catalog
    reasons = {r["task"]: r["reason"] for r in exp.pool.removed}
    assert reasons["animal_facts"].startswith("target family")
    assert reasons["sports_understanding"].startswith("BBH parent")
    assert reasons["hindu_knowledge"].startswith("T0 evaluation task")
    assert "stem" in reasons["animal_facts_hard"]
    assert reasons["zoo_statements"].startswith("near-duplicate: instruction cosine")
    assert reasons["story_writing"].startswith("format")
    assert "arith" in pool.ids and "arith/addition" not in pool.ids  # family units
    assert set(pool.get("arith").instructions) >= {"Add the numbers.", "Subtract the numbers."}
    for t in exp.targets:
        assert all(s.label is None and not s.references for s in t.samples)
        assert len(t.eval_examples) == min(cfg.eval.n, t.n_available)
    sports = next(t for t in exp.targets if t.task.id == "sports_understanding")
    assert not sports.samples_overlap_eval  # 20 examples: 10 eval + 4 held-out samples
    assert not {s.id for s in sports.samples} & {e.id for e in sports.eval_examples}
    summary = sports.summary()
    assert summary["fixed_labels"] and summary["label_set"] == ["no", "yes"]


@pytest.mark.parametrize("change,message", [
    ({"methods": ["insta-mean", "insta-magic"]}, "unknown selection method 'insta-magic'"),
    ({"methods": [{"name": "lexical", "depth": 2}]}, "unknown option"),
    ({"targets": ["bigbench:animal_fact"]}, "unknown task 'animal_fact'.*animal_facts"),
    ({"targets": ["nope:animal_facts"]}, "unknown catalog 'nope'"),
    ({"k": 50}, "k=50 is larger than the pool"),
    ({"k": 0}, "k must be a positive integer"),
    ({"mixtur": {"n_total": 3}}, "unknown key.*mixtur.*did you mean mixture"),
    ({"train": {"epoch": 1}}, "unknown key.*epoch"),
    ({"methods": [{"name": "insta-aligned", "encoder": "/no/such/dir"}]}, "encoder directory"),
    ({"methods": [{"name": "random", "seeds": "0,1"}]}, "seeds"),
    ({"backend": "gpu-magic"}, "unknown backend"),
    ({"report": {"normalisation": "bytes"}}, "report.normalisation must be char"),
    ({"report": {"interval": "studentized"}}, "report.interval must be one of percentile, bca"),
    ({"mixture": {"dedup_ngram": 2}}, "mixture.dedup_ngram must be at least 3"),
    ({"p3_table": {"align": {"epochs": "five"}}}, "p3_table.align.epochs must be an integer"),
    ({"p3_table": {"align": {"objectiv": "mnrl"}}}, "unknown key.*objectiv.*did you mean objective"),
    ({"eval": {"limit": 3}}, "unknown key.*limit"),
])
def test_bad_config_fails_before_any_work(tmp_path, change, message):
    b = DryRunBackend()
    with pytest.raises(InstaError, match=message):
        cfg = config_from_dict(raw_tiny(tmp_path, **change), "tiny.yaml")
        run_experiment(cfg, backend=b, log=quiet, report=False)
    assert (b.n_train, b.n_eval) == (0, 0)
    assert not (tmp_path / "out" / "cells").exists()


def test_cli_runs_the_grid_and_reports_bad_configs(tmp_path, capsys):
    from insta.cli import main

    out = tmp_path / "cli-out"
    assert main(["experiment", str(TINY), "--out", str(out), "--data-dir", str(DATA), "--quiet"]) == 0
    for name in ("results.json", "results.md", "report.html", "differences.png", "selection_overlap.png"):
        assert (out / name).is_file(), name
    assert main(["experiment", str(TINY), "--out", str(out), "--data-dir", str(DATA), "--report-only", "-q"]) == 0
    assert main(["experiment", str(TINY), "--out", str(out), "--data-dir", str(DATA), "--plan", "-q"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: no plan table either
    assert main(["experiment", str(TINY), "--out", str(out), "--data-dir", str(DATA), "--plan"]) == 0
    assert "0 grid cell(s) to compute" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  - lexical\n", "  - lexicall\n"))
    assert main(["experiment", str(bad), "--out", str(tmp_path / "x"), "--data-dir", str(DATA), "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown selection method 'lexicall'" in err and len(err.strip().splitlines()) == 1
    assert main(["experiment", str(tmp_path / "missing.yaml")]) == 2


def _to_cell_format_1(path: Path) -> None:
    """Rewrite a cell as insta wrote it before the lm-evaluation-harness names (pred_norm = per token)."""
    cell = json.loads(path.read_text())
    s = cell["samples"]
    del s["format"], s["pred_norm"]
    s["pred_norm"] = s.pop("pred_norm_token")
    cell["metrics"] = {"acc_sum": 0.5, "acc_norm": 0.25}
    path.write_text(json.dumps(cell))


def test_cells_of_format_1_are_reused_and_read_as_per_token(tmp_path, capsys):
    from insta.cli import main
    from insta.report import metric_on

    cfg = tiny(tmp_path)
    first = run_experiment(cfg, backend=DryRunBackend(), log=quiet, report=False)
    cells = sorted((Path(cfg.out) / "cells").glob("*.json"))
    s0 = json.loads(cells[0].read_text())["samples"]
    assert s0["format"] == 3 and {"pred_sum", "pred_norm", "pred_norm_token", "pred_calibrated", "options",
                                  "scores_sum", "n_tokens"} <= set(s0)
    for c in cells:
        _to_cell_format_1(c)
    # default normalisation (characters): the old cells cannot give it, and the error says what to do
    with pytest.raises(InstaError, match="report.normalisation: token"):
        run_experiment(cfg, backend=DryRunBackend(), log=quiet)
    b = DryRunBackend()
    res = run_experiment(tiny(tmp_path, report={"normalisation": "token"}), backend=b, log=quiet)
    assert (b.n_train, b.n_eval) == (0, 0)  # the cells' keys did not change: nothing recomputed
    assert set(res["summary"]["primary"].values()) <= {"bal_acc_norm_token", "acc_norm_token", "exact_match"}
    for c in res["cells"]:
        assert metric_on(res["samples"][c["eval_key"]], "acc_norm_token") == \
            metric_on(first["samples"][c["eval_key"]], "acc_norm_token")
        assert c["evaluate_metrics"] == {"acc": 0.5, "acc_norm_token": 0.25}
    # --report-only takes the report settings from the config file (here: back to characters -> refused)
    assert main(["experiment", str(TINY), "--out", cfg.out, "--data-dir", str(DATA), "--report-only", "-q"]) == 2
    assert "report.normalisation: token" in capsys.readouterr().err
    token_cfg = tmp_path / "tiny-token.yaml"
    token_cfg.write_text(TINY.read_text().replace("report:\n", "report:\n  normalisation: token\n"))
    assert main(["experiment", str(token_cfg), "--out", cfg.out, "--data-dir", str(DATA), "--report-only", "-q"]) == 0
    md = (Path(cfg.out) / "results.md").read_text()
    assert "length in **tokens**" in md and "bal_acc_norm_token" in md


def test_shipped_real_config_is_valid():
    cfg = load_config(REPO / "configs" / "bigbench-smollm2.yaml", {"data_dir": str(DATA)})
    assert cfg.k == 5 and len(cfg.targets) >= 6
    assert cfg.model == "smollm2"
    names = {m.name for m in cfg.methods}
    assert names == {"insta-mean", "insta-topk-vote", "insta-aligned", "all", "random", "roe", "lexical", "dsir"}
    assert len([m for m in cfg.methods if m.name == "random"]) >= 3
    raw = json.loads(json.dumps(cfg.raw))
    assert raw["mixture"]["n_total"] > 0


def test_cli_overrides_for_a_smoke_run(tmp_path):
    cfg = load_config(TINY, {"data_dir": str(DATA), "out": str(tmp_path / "o"), "eval.n": 4, "mixture.n_total": 6,
                             "targets": ["bbh:sports_understanding"]}, only_methods=["insta-mean", "random"])
    assert cfg.eval.n == 4 and cfg.n_total == 6 and cfg.targets == ["bbh:sports_understanding"]
    assert [m.label for m in cfg.methods] == ["insta-mean", "random-s0", "random-s1", "random-s2"]
    res = run_experiment(cfg, backend=DryRunBackend(), log=quiet, report=False)
    assert len(res["cells"]) == 5 and all(len(s["ids"]) == 4 for s in res["samples"].values())
    with pytest.raises(InstaError, match="not in the config: magic"):
        load_config(TINY, only_methods=["magic"])


def test_partial_report_from_the_cells_finished_so_far(tmp_path):
    from insta.cli import main

    out = tmp_path / "partial"
    common = ["--out", str(out), "--data-dir", str(DATA), "-q"]
    assert main(["experiment", str(TINY), "--partial-report", *common]) == 2  # nothing finished yet
    assert main(["experiment", str(TINY), *common]) == 0
    cells = sorted((out / "cells").glob("*.json"))
    cells[0].unlink()  # as if the run had been stopped before this cell
    (out / "results.md").unlink()
    assert main(["experiment", str(TINY), "--partial-report", *common]) == 0
    md = (out / "results.md").read_text()
    import re

    done, total = map(int, re.search(r"PARTIAL: (\d+) of (\d+) cells finished", md).groups())
    assert 0 < done < total  # entries that share the deleted evaluation (same model, same target) are missing too
    assert "Missing cells:" in md
    assert len(list((out / "cells").glob("*.json"))) == len(cells) - 1  # the report computed nothing


def test_p3_table_aligned_encoder_is_trained_when_missing(tmp_path, monkeypatch):
    import insta.align.targets
    from insta.experiment import ensure_p3_aligned_encoder

    calls = []
    monkeypatch.setattr(insta.align.targets, "align_encoder",
                        lambda catalog, config, out, log=None: calls.append((catalog.name, config, out)) or out)
    target = tmp_path / "p3-aligned"
    cfg = load_config(TINY, {"data_dir": str(REPO / "tests" / "fixtures" / "p3"),
                             "p3_table.aligned_encoder": str(target), "p3_table.align": {"objective": "mnrl"}})
    assert ensure_p3_aligned_encoder(cfg) == target
    (name, config, out), = calls
    assert name == "p3" and config.objective == "mnrl" and config.pool == "t0_train" and out == str(target)
    target.mkdir()
    (target / "modules.json").write_text("[]")
    assert ensure_p3_aligned_encoder(cfg) is None and len(calls) == 1  # present: nothing trained
    cfg.p3_table.align = None
    (target / "modules.json").unlink()
    assert ensure_p3_aligned_encoder(cfg) is None  # no recipe given: the column is left out, as before


def test_new_selection_methods_and_a_k_rule_run_in_the_grid(tmp_path):
    """Every registered method is usable from an experiment config, options included (issue #11): format-aware
    INSTA, hybrid with its weight, and a method that reads k off its scores."""
    methods = [{"name": "insta-format"}, {"name": "hybrid", "weight": 0.3},
               {"name": "insta-max", "label": "insta-max-gap", "k": "gap"}]
    cfg = config_from_dict(raw_tiny(tmp_path, methods=methods), "tiny.yaml")
    res = run_experiment(cfg, backend=DryRunBackend(), log=quiet, report=False, plan_only=True)
    by = {(c["target"], c["label"]): c for c in res["plan"]}
    assert {lab for _, lab in by} >= {"insta-format", "hybrid", "insta-max-gap"}
    gap = [c for (t, lab), c in by.items() if lab == "insta-max-gap"]
    assert gap and all(1 <= len(c["selected"]) <= 20 for c in gap)
    described = {m["label"]: m for m in res["methods"]}
    assert described["hybrid"]["params"]["weight"] == 0.3
    assert described["insta-max-gap"]["params"]["k"]["rule"] == "gap"


def test_cache_keys_hash_the_sections_as_written():
    """Models and cells are keyed by the options a config writes (the committed cells were keyed so), plus any
    option changed after loading; the sections themselves are typed."""
    cfg = load_config(REPO / "configs" / "bigbench-smollm2.yaml", {"data_dir": str(DATA)})
    assert cfg.key_options("train") == cfg.raw["train"] and cfg.train.epochs == 1 and cfg.train.lora is False
    assert cfg.key_options("eval") == cfg.raw["eval"] and cfg.eval.calibration == "fixed" and cfg.eval.n == 60
    assert cfg.key_options("mixture") == {"dedup": True} and cfg.n_total == 100
    assert cfg.p3_table.align.objective == "mnrl" and cfg.p3_table.align.pool == "t0_train"
    cfg.train.epochs = 2
    cfg.eval.max_new_tokens = 5  # not written in the file, changed since: part of the key
    assert cfg.key_options("train")["epochs"] == 2 and cfg.key_options("eval")["max_new_tokens"] == 5


def test_grid_cells_keep_option_scores_and_margins(tmp_path):
    """Grid cells keep every option's score (as transfer cells do), so the matrix's margin metrics are computed
    from them; a format-2 cell (no option scores) upgrades without touching its per-character predictions."""
    from insta.engine.cells import upgrade_samples
    from insta.matrix.cells import margins, standardized_margins

    cfg = tiny(tmp_path)
    run_experiment(cfg, backend=DryRunBackend(), log=quiet, report=False)
    seen = 0
    for path in sorted((Path(cfg.out) / "cells").glob("*.json")):
        cell = json.loads(path.read_text())
        s = cell["samples"]
        if not s["scores_sum"] or any(x is None for x in s["scores_sum"]):
            continue
        seen += 1
        assert len(s["options"]) == len(s["ids"]) == len(s["n_tokens"])
        assert all(len(o) == len(sc) == n for o, sc, n in zip(s["options"], s["scores_sum"], s["n_options"]))
        m, z = margins(s), standardized_margins(s)
        assert cell["metrics"]["margin"] == pytest.approx(sum(m) / len(m))
        assert cell["metrics"]["margin_z"] == pytest.approx(sum(z) / len(z))
        # the margin is positive exactly where the summed-log-likelihood rule answers correctly
        assert all((mi > 0) == (p == lab) for mi, p, lab in zip(m, s["pred_sum"], s["label"]) if mi != 0)
        old = {k: v for k, v in s.items() if k not in ("options", "scores_sum", "n_tokens")} | {"format": 2}
        up = upgrade_samples(old)
        assert up["format"] == 3 and up["pred_norm"] == s["pred_norm"] and margins(up) is None
    assert seen > 0
