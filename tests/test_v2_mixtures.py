"""Matrix v2's mixtures experiment (issue #22 item 6): the design derived from a v2 run (a hand-written matrix with
known transfers over the fixture tasks, a hand-written scoring), the pre-registered variant rule, the predicted
order from the selected sources, Kendall's tau and its CI on hand-computed cases, the grid's ``eval_ids`` option,
resume, and the one-line errors; the dry-run-like backend here makes each mixture's effect a known function of its
sources, so the measured order must follow the predicted one."""
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta import cli  # noqa: E402
from insta.engine import DryRunBackend  # noqa: E402
from insta.errors import InstaError  # noqa: E402
from insta.experiment import config_from_dict  # noqa: E402
from insta.report.stats import bootstrap_mean_ci  # noqa: E402
from insta.transfer import load_transfer_config  # noqa: E402
from insta.transfer.mixtures_analysis import analyse, kendall  # noqa: E402
from insta.transfer.mixtures_config import choose_variant, derive_design, load_mixtures_config  # noqa: E402
from insta.transfer.runner import TransferRun  # noqa: E402
from insta.commands._mixtures import run_mixtures  # noqa: E402

_one_thread = tiny_lm.one_torch_thread
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"
#: the hand-written matrix: margin_z transfer of each source (the same on both targets), acc a tenth of it
EFFECT = {"arith": 0.9, "plant_facts": 0.5, "capitals": -0.4, "color_names": 0.1, "animal_trivia": 0.3}
METHODS = [{"method": "insta-mean"}, {"method": "insta-mean", "label": "insta-max", "options": {"aggregation": "max"}},
           {"method": "lexical"}, {"method": "roe"}, {"method": "all"}]


def quiet(msg):
    pass


def scoring(passes=("insta-max",), means=None):
    """A hand-written v2 scoring: linear-gain NDCG means and paired CIs against insta-mean."""
    means = means or {"insta-mean": 0.5, "insta-max": 0.6, "lexical": 0.7, "roe": 0.9, "all": 0.4}
    summary = {lab: {"ndcg_linear": {"mean": m}} for lab, m in means.items()}
    paired = {f"{lab} - insta-mean": {"ndcg_linear": {"mean": m - 0.5, "lo": 0.01 if lab in passes else -0.1,
                                                      "hi": 0.3}} for lab, m in means.items()}
    return {"metric": "margin_z", "summary": summary, "paired": paired}


class SourceEffect(DryRunBackend):
    """A fake model whose gold option gains the mean EFFECT of its mixture's sources on every example (the base
    model gains nothing); distractors fixed, the gold's starting point varies per example."""

    name = "source-effect"

    def evaluate(self, handle, examples, options, task_id, catalog):
        self.n_eval += 1
        total = sum(handle["counts"].values())
        effect = sum(n * EFFECT[t.split("/")[0]] for t, n in handle["counts"].items()) / total if total else 0.0
        samples = []
        for i, ex in enumerate(examples):
            sums = [-5.0 - 0.5 * j for j in range(len(ex.options))]
            sums[ex.label] = -5.5 + 0.3 * (i % 4) + effect
            best = max(range(len(sums)), key=lambda j: sums[j])
            samples.append({"type": "rank", "id": ex.id, "options": list(ex.options), "label": ex.label,
                            "reference": ex.options[ex.label], "scores_sum": sums, "n_tokens": [1] * len(sums),
                            "pred_sum": best, "pred_norm": best, "pred_norm_token": best, "pred_calibrated": best})
        return {"samples": samples}


def make_v2(tmp_path, *, with_scoring=True, drop_target=None, methods=METHODS, **v2_over):
    """A v2 run folder: its config (the tiny transfer config, 5 sources, one seed), a hand-written matrix over
    the sources it chooses, a scoring and a methods file; returns the mixtures config path."""
    v2 = tmp_path / "v2"
    raw = yaml.safe_load((REPO / "configs" / "transfer-tiny.yaml").read_text())
    raw.update({"data_dir": str(DATA), "out": str(v2), "seeds": [0], "sources": {"strategy": "spread", "n": 5},
                **v2_over})
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(raw))
    run = TransferRun(load_transfer_config(tmp_path / "v2.yaml"), log=quiet)
    run.prepare()
    assert set(run.sources) == set(EFFECT)
    rows = [{"target": t.id, "source": s, "seed": 0, "metric": m,
             "transfer": EFFECT[s] * (1 if m == "margin_z" else .1)}
            for t in run.targets if t.id != drop_target for s in run.sources for m in ("margin_z", "acc")]
    meta = {"sources": run.sources, "source_catalog": "bigbench", "unit": "family",
            "eval_ids": {t.id: [ex.id for ex in t.eval_examples] for t in run.targets}}
    v2.mkdir()
    (v2 / "matrix.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    if with_scoring:
        (v2 / "results.json").write_text(json.dumps({"scoring": scoring()}))
    (tmp_path / "methods.yaml").write_text(yaml.safe_dump(methods))
    cfg = {"name": "mix", "from_transfer": str(tmp_path / "v2.yaml"), "methods": str(tmp_path / "methods.yaml"),
           "out": str(tmp_path / "mix"), "targets": 2, "k": 2, "bootstrap": 500}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "mix.yaml"


# ---------------------------------------------------------------- hand-computed pieces


def test_kendall_tau_on_hand_computed_orders():
    assert kendall([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # one swapped pair of 6: (5 - 1) / 6
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with a tie on both sides (two methods, one model): 5 concordant pairs, the tied pair neither:
    # 5 / sqrt((6 - 1) * (6 - 1)) = 1
    assert kendall([1, 1, 2, 3], [5, 5, 6, 7]) == pytest.approx(1.0)
    # a tie on one side only: 4 concordant, 1 discordant, 1 tied in x: (4 - 1) / sqrt(5 * 6)
    assert kendall([1, 1, 2, 3], [5, 6, 8, 7]) == pytest.approx(3 / (5 * 6) ** 0.5)
    assert kendall([2, 2, 2, 2], [1, 2, 3, 4]) is None  # every prediction ties: no order to compare
    assert kendall([1], [1]) is None


def test_mean_tau_and_its_bootstrap_ci_over_targets():
    """Three targets with known orders: the mean tau and the CI are the report's bootstrap over targets."""
    class Matrix:
        def mean_transfer(self, target, metric):
            return {"a": 1.0, "b": 2.0, "c": 3.0} if metric == "margin_z" else {"a": 0.1, "b": 0.2, "c": 0.3}

    def cell(diffs):  # two options, gold ahead by ``diffs`` per example
        return {"samples": {"ids": ["x", "y"], "label": [0, 0], "pred_sum": [0, 0],
                            "scores_sum": [[d, 0.0] for d in diffs]}}

    measured_order = {"t1": [1, 2, 3], "t2": [3, 2, 1], "t3": [1, 3, 2]}  # tau 1, -1, 1/3
    cells, entries = {}, []
    slots = [{"label": s, "role": s} for s in "abc"]
    for t, order in measured_order.items():
        cells[f"{t}-base"] = cell([1.0, 2.0])
        entries.append({"target": t, "label": "base", "sources": [], "model_key": "base", "eval_key": f"{t}-base"})
        for s, rank in zip("abc", order):
            cells[f"{t}-{s}"] = cell([1.0 + rank, 2.0 + rank])  # a common shift: the standardized gain grows
            entries.append({"target": t, "label": s, "sources": [s], "model_key": s, "eval_key": f"{t}-{s}"})
    oracle = {"targets": {"t1": {"transfer": {"margin_z": 2.0, "acc": 0.25}}}}  # the screen's in-task oracle
    res = analyse(Matrix(), list(measured_order), slots, entries, cells.get, oracle, n_boot=2000, seed=0)
    taus = [r["tau"]["margin_z"]["tau"] for r in res["targets"]]
    assert taus == pytest.approx([1.0, -1.0, 1 / 3])
    tau = res["tau"]["margin_z"]
    assert tau["n"] == 3 and tau["mean"] == pytest.approx(1 / 9)
    assert (tau["lo"], tau["hi"]) == pytest.approx(bootstrap_mean_ci(taus, 2000, seed=0)[1:])
    assert tau["lo"] < tau["mean"] < tau["hi"]
    assert res["complete"]
    row = res["targets"][0]["methods"][0]
    assert row["predicted"] == {"margin_z": 1.0, "acc": pytest.approx(0.1)}
    assert row["measured"]["acc"]["change"] == 0.0
    assert row["oracle_share"] == pytest.approx(row["measured"]["margin_z"]["mean"] / 2.0)
    assert res["targets"][0]["oracle"] == {"margin_z": 2.0, "acc": 0.25}
    assert "oracle_share" not in res["targets"][1]["methods"][0]  # no oracle row for t2


def test_variant_rule_as_pre_registered():
    # two pass: the higher mean of those that pass, not lexical (higher mean overall, CI not above 0)
    v = choose_variant(scoring(passes=("insta-max",)), [m.get("label", m["method"]) for m in METHODS])
    assert v["label"] == "insta-max" and v["by"].startswith("rule: beats")
    assert [c["label"] for c in v["candidates"]] == ["insta-max", "lexical"]  # roe and all hold no variant slot
    # none passes: the best by mean (roe is not a candidate even with the best mean)
    v = choose_variant(scoring(passes=()), ["insta-mean", "insta-max", "lexical", "roe"])
    assert v["label"] == "lexical" and "none beats" in v["by"]
    with pytest.raises(InstaError, match="no row for pre-registered method"):
        choose_variant(scoring(), ["insta-mean", "insta-format"])


# ---------------------------------------------------------------- the grid option


def test_grid_eval_ids_option_is_checked(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    with pytest.raises(InstaError, match="no example ids for target"):
        config_from_dict({**raw, "eval_ids": {"bigbench:animal_facts": ["a"]}})
    with pytest.raises(InstaError, match="not a target"):
        config_from_dict({**raw, "eval_ids": {t: ["a"] for t in raw["targets"] + ["bigbench:arith"]}})
    with pytest.raises(InstaError, match="distinct example ids"):
        config_from_dict({**raw, "eval_ids": {t: ["a", "a"] for t in raw["targets"]}})
    from insta.experiment import Experiment

    cfg = config_from_dict({**raw, "data_dir": str(DATA), "eval_ids": {t: ["nope"] for t in raw["targets"]}})
    with pytest.raises(InstaError, match="are not its examples"):
        Experiment(cfg, out=tmp_path, log=quiet).prepare()


# ---------------------------------------------------------------- end to end


def test_design_is_v2s_and_predictions_use_the_selected_sources(tmp_path):
    from insta.evaluators.methods_vs_matrix import _source_pool
    from insta.methods import load_method, unlabelled_samples
    from insta.selection import ranking_scores
    from insta.catalogs import load_catalog

    cfg = load_mixtures_config(make_v2(tmp_path))
    d = derive_design(cfg, log=quiet)
    g = d.grid
    assert d.targets == ["bigbench:animal_facts", "bbh:sports_understanding"]
    assert set(g["pool"]["include"]) == set(EFFECT) and g["mixture"]["n_total"] == 2 * 8  # k x v2's instances
    assert g["train"]["seed"] == 0 and g["eval_ids"] == d.matrix.meta["eval_ids"]
    assert d.variant["label"] == "insta-max"
    assert [s["label"] for s in d.slots] == ["insta-mean", "insta-max", "roe", "random-s0"]
    plan = run_mixtures(cfg, plan_only=True, backend=SourceEffect(), log=quiet)
    assert plan["cells_to_run"] == plan["cells"] and plan["n_total"] == 16
    assert not (tmp_path / "mix" / "cells").exists()  # a plan trains and evaluates nothing
    # each method's top k is the one v2's scoring ranked: the same pool, samples and method
    cats = {}
    pool, _, _ = _source_pool(d.matrix, lambda n: cats.setdefault(n, load_catalog(n, str(DATA))), None, None)
    for t in plan["predicted"]["targets"]:
        rows = {r["label"]: r for r in t["methods"]}
        for r in rows.values():
            assert r["predicted"]["margin_z"] == pytest.approx(sum(EFFECT[s] for s in r["sources"]))
            assert len(r["sources"]) == 2 and set(r["sources"]) <= set(EFFECT)
        cat, tid = t["target"].split(":")
        task = load_catalog(cat, str(DATA)).get(tid)
        samples = unlabelled_samples(task, 4, set(g["eval_ids"][t["target"]]), g["samples_seed"])
        for label, name, opts in (("insta-mean", "insta-mean", {}), ("roe", "roe", {"library_size": 8})):
            sc = ranking_scores(load_method(name, encoder="hashing", **opts), task, pool, samples)
            top = sorted(sc, key=lambda s: -sc[s])[:2]
            assert sorted(rows[label]["sources"]) == sorted(top), label


def test_run_report_and_resume(tmp_path):
    cfg = load_mixtures_config(make_v2(tmp_path))
    b = SourceEffect()
    res = run_mixtures(cfg, backend=b, log=quiet)
    assert res["complete"] and b.n_train >= 2
    ordered = 0
    for t in res["targets"]:
        rows = t["methods"]
        pred = [r["predicted"]["margin_z"] for r in rows]
        meas = [r["measured"]["margin_z"]["mean"] for r in rows]
        # the mixture's effect is the mean of its sources' (equal shares): the measured order is the predicted one
        for i in range(len(rows)):
            for j in range(len(rows)):
                if pred[i] > pred[j] + 1e-9:
                    assert meas[i] > meas[j], (rows[i]["label"], rows[j]["label"])
        if len(set(pred)) > 1:
            assert t["tau"]["margin_z"]["tau"] == pytest.approx(1.0)
            ordered += 1
    assert ordered >= 1 and res["tau"]["margin_z"]["n"] == ordered
    out = tmp_path / "mix"
    md = (out / "mixtures.md").read_text()
    assert "Kendall tau" in md and "insta-max (variant)" in md and "random-s0" in md
    assert json.loads((out / "mixtures.json").read_text())["tau"]["margin_z"]["n"] >= 1
    first = {p.name: p.read_text() for p in (out / "cells").glob("*.json")}
    b2 = SourceEffect()
    again = run_mixtures(cfg, backend=b2, log=quiet)
    assert b2.n_train == 0 and b2.n_eval == 0  # every cell done: nothing retrained or re-evaluated
    assert {p.name: p.read_text() for p in (out / "cells").glob("*.json")} == first
    assert again["tau"] == res["tau"]


def test_a_killed_run_resumes_without_redoing_finished_cells(tmp_path, killed_after):
    cfg = load_mixtures_config(make_v2(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_mixtures(cfg, backend=killed_after(SourceEffect(), 3), log=quiet)
    cells = tmp_path / "mix" / "cells"
    first = {p.name: p.read_text() for p in cells.glob("*.json")}
    assert len(first) == 3
    b = SourceEffect()
    res = run_mixtures(cfg, backend=b, log=quiet)
    assert res["complete"] and all((cells / n).read_text() == text for n, text in first.items())
    assert b.n_eval == len(list(cells.glob("*.json"))) - 3  # only the cells missing after the kill


# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("case, msg", [
    ("unscored", "matrix v2 is not scored yet"),
    ("no_target", "missing from v2's matrix"),
    ("no_matrix", "matrix v2 has no matrix yet"),
])
def test_clear_errors(tmp_path, capsys, case, msg):
    path = make_v2(tmp_path, with_scoring=case != "unscored",
                   drop_target="bbh:sports_understanding" if case == "no_target" else None)
    if case == "no_matrix":
        (tmp_path / "v2" / "matrix.json").unlink()
    code = cli.main(["transfer", str(path), "--plan", "-q"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and msg in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_plan_prints_the_predicted_order(tmp_path, capsys):
    path = make_v2(tmp_path)
    assert cli.main(["transfer", str(path), "--plan", "--dry-run", "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "predicted order" in out and "variant: insta-max" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [t["target"] for t in plan["predicted"]["targets"]] == plan["targets"]
    assert cli.main(["transfer", str(path), "--allow-partial-screen"]) != 0
    assert "does not apply" in capsys.readouterr().err


def test_the_v2_mixtures_config_reads_v2s_files():
    cfg = load_mixtures_config(REPO / "configs" / "mixtures-v2-bigbench-smollm2.yaml")
    assert (cfg.targets, cfg.k, cfg.variant, cfg.random_seed) == (6, 5, "rule", 0)
    assert (REPO / cfg.from_transfer).is_file() and (REPO / cfg.methods).is_file()
    assert load_transfer_config(REPO / cfg.from_transfer).raw["out"] == "experiments/transfer-v2-bigbench-smollm2"
    with pytest.raises(InstaError, match="unknown key"):
        load_mixtures_config(REPO / "configs" / "mixtures-v2-bigbench-smollm2.yaml", {"varient": "x"})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
def test_end_to_end_with_a_tiny_real_model(tmp_path):
    """The same experiment with a real (tiny, random-init) causal LM: mixtures trained and evaluated by the
    transformers backend; every cell carries option scores, so each mixture has a measured margin_z and accuracy."""
    # byte-level BPE: every option text gets its own tokens (a word-level vocabulary would read them all as <unk>)
    corpus = ["True False yes no The animal plant is a fact Question Answer"] * 20
    model = str(tiny_lm.build_causal_bpe(tmp_path / "llama", corpus))
    cfg = load_mixtures_config(make_v2(
        tmp_path, backend="transformers", model=model, instances=4, eval={"n": 4},
        train={"epochs": 1, "batch_size": 4, "learning_rate": 1e-2, "progress": False, "save_steps": 1000,
               "max_source_length": 64, "max_target_length": 8}))
    res = run_mixtures(cfg, log=quiet)
    assert res["complete"]
    for t in res["targets"]:
        assert t["base"]["acc"] is not None
        for r in t["methods"]:
            got = r["measured"]
            z = got["margin_z"]
            assert z["n"] == 4 and z["lo"] <= z["mean"] <= z["hi"]
            assert got["acc"]["base"] == t["base"]["acc"]
            assert r["predicted"]["margin_z"] == pytest.approx(sum(EFFECT[s] for s in r["sources"]))
    trained = list((tmp_path / "mix" / "trained").glob("*.json"))
    assert trained and all(json.loads(p.read_text())["n_records"] == 2 * 4 for p in trained)
    assert not list((tmp_path / "mix" / "models").glob("*/model"))  # weights deleted once evaluated


# ---------------------------------------------------------------- on a v2 run made from a screen


def test_on_a_v2_run_from_a_screen_frozen_order_scoring_and_oracle(tmp_path):
    """The whole chain on fixture data with the dry-run backend: a screen, matrix v2 from it (targets frozen in
    targets.json, scored on margin_z by its own report), then the mixtures: the first targets of the frozen order,
    the variant from v2's own scoring, and the screen's oracle as the reference of every mixture."""
    from insta.transfer import config_from_dict as transfer_config, run_transfer
    from insta.transfer.screen import Screen
    from insta.transfer.screen_config import load_screen_config
    from insta.transfer.screen_verdicts import write_summary

    raw = yaml.safe_load((REPO / "configs" / "screen-tiny.yaml").read_text())
    raw.update(data_dir=str(DATA), out=str(tmp_path / "screen"), curve={"targets": [], "instances": []})
    (tmp_path / "screen.yaml").write_text(yaml.safe_dump(raw))
    screen = Screen(load_screen_config(str(tmp_path / "screen.yaml")), log=quiet)
    screen.prepare()
    screen.run(progress=False)
    write_summary(screen)
    v2 = yaml.safe_load((REPO / "configs" / "transfer-tiny.yaml").read_text())
    v2.update(data_dir=str(DATA), out=str(tmp_path / "v2"), seeds=[0], eval={"n": 8},
              targets={"from_screen": str(tmp_path / "screen.yaml"), "max": 24, "min": 2},
              sources={"strategy": "nearest-spread", "nearest": 1, "n": 4},
              scoring={"include_unreliable": True, "encoder": "hashing", "target_samples": 4, "library_size": 8,
                       "draws": 100, "bootstrap": 200, "metric": "margin_z", "methods": METHODS[:4]})
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(v2))
    v2_results = run_transfer(transfer_config(v2, str(tmp_path / "v2.yaml")), log=quiet, progress=False)
    assert v2_results["scoring"]["metric"] == "margin_z"
    frozen = json.loads((tmp_path / "v2" / "targets.json").read_text())["targets"]
    (tmp_path / "methods.yaml").write_text(yaml.safe_dump(METHODS[:4]))
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({
        "from_transfer": str(tmp_path / "v2.yaml"), "methods": str(tmp_path / "methods.yaml"),
        "out": str(tmp_path / "mix"), "targets": 2, "k": 2, "bootstrap": 200}))
    cfg = load_mixtures_config(tmp_path / "mix.yaml")
    d = derive_design(cfg, log=quiet)
    assert d.targets == frozen[:2]
    assert d.variant == choose_variant(v2_results["scoring"], ["insta-mean", "insta-max", "lexical", "roe"])
    res = run_mixtures(cfg, log=quiet)
    assert res["complete"]
    matrix = json.loads((tmp_path / "v2" / "matrix.json").read_text())["rows"]
    shares = 0
    for t in res["targets"]:
        ref = v2_results["oracle"]["targets"][t["target"]]["transfer"]
        assert t["oracle"] == {"margin_z": ref["margin_z"], "acc": ref["acc"]}
        for r in t["methods"]:
            want = sum(x["transfer"] for x in matrix if x["target"] == t["target"] and x["metric"] == "margin_z"
                       and x["source"] in r["sources"])
            assert r["predicted"]["margin_z"] == pytest.approx(want)
            if ref["margin_z"] > 0:
                assert r["oracle_share"] == pytest.approx(r["measured"]["margin_z"]["mean"] / ref["margin_z"])
                shares += 1
    assert shares >= 1  # the dry-run oracles gain on their own task
    assert "In-task oracle (reference, not a source)" in (tmp_path / "mix" / "mixtures.md").read_text()
