"""Scoring against a transfer matrix (issue #22 item 5): linear-gain NDCG, precision@k and best-of-k regret by
hand (ties at the cut included), targets with no positive transfer, the random fill of a target a method cannot
score, paired differences, and the CLI (`insta eval-selection --transfer`) on a fixture matrix: the new columns,
the reference tables, the filled targets, the recorded seed and a byte-identical rerun."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from insta import cli
from insta.matrix.scoring import random_expectation, score_rankings
from insta.matrix.topk_metrics import (best_of_k_regret, linear_gain_ndcg, ndcg, precision_at_k, rank_linear_ndcg,
                                       regret_at_k)
from insta.report.stats import bootstrap_mean_ci

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"


def disc(p: int) -> float:
    return 1 / math.log2(p + 2)


# ---------------------------------------------------------------- the scores of one ranking, by hand


def test_linear_gain_ndcg_by_hand():
    t = [0.3, -0.1, 0.2, 0.0]  # gains 0.3, 0, 0.2, 0
    ideal = 0.3 * disc(0) + 0.2 * disc(1)
    assert linear_gain_ndcg(t, [4, 1, 3, 2]) == pytest.approx(1.0)
    assert linear_gain_ndcg(t, [4, 2, 3, 1]) == pytest.approx(1.0)  # the two sources without gain in any order
    # the method ranks b, a, c, d: a at position 1, c at 2
    assert linear_gain_ndcg(t, [3, 4, 2, 1]) == pytest.approx((0.3 * disc(1) + 0.2 * disc(2)) / ideal)
    # ties: (a, b) share positions 0-1, (c, d) positions 2-3, each at its group's mean discount
    got = (0.3 * (disc(0) + disc(1)) / 2 + 0.2 * (disc(2) + disc(3)) / 2) / ideal
    assert linear_gain_ndcg(t, [1, 1, 0, 0]) == pytest.approx(got)
    # a source that hurts counts as nothing, whatever its size; the rank-based NDCG counts it
    assert linear_gain_ndcg([0.3, -5.0, 0.2, 0.0], [3, 4, 2, 1]) == linear_gain_ndcg(t, [3, 4, 2, 1])
    assert rank_linear_ndcg(t, [3, 4, 2, 1]) != pytest.approx(linear_gain_ndcg(t, [3, 4, 2, 1]))
    # gains in proportion to the transfer: twice the transfer, the same NDCG; not so for the exponential one
    assert linear_gain_ndcg([0.6, -0.2, 0.4, 0.0], [3, 4, 2, 1]) == pytest.approx(linear_gain_ndcg(t, [3, 4, 2, 1]))
    assert ndcg([0.3, 0.0, 0.29, 0.28], [1, 2, 3, 4]) < linear_gain_ndcg([0.3, 0.0, 0.29, 0.28], [1, 2, 3, 4])


def test_linear_gain_ndcg_is_undefined_without_a_positive_transfer():
    assert math.isnan(linear_gain_ndcg([-0.1, 0.0, -0.3], [1, 2, 3]))
    assert math.isnan(linear_gain_ndcg([0.0, 0.0], [1, 2]))
    assert math.isfinite(linear_gain_ndcg([1.7e308, 1.6e308, -1.0e308], [1, 2, 3]))  # no overflow


def test_precision_at_k_with_ties_at_the_cut():
    t = [0.5, 0.4, 0.3, 0.2, 0.1]
    assert precision_at_k(t, [5, 4, 3, 2, 1], 2) == 1.0
    assert precision_at_k(t, [1, 2, 3, 4, 5], 2) == 0.0
    # a sure, then one of (b, c, d) at random: b (gold) with probability 1/3
    assert precision_at_k(t, [3, 2, 2, 2, 1], 2) == pytest.approx((1 + 1 / 3) / 2)
    # the cut falls exactly at a group's end: no split
    assert precision_at_k(t, [3, 3, 1, 1, 1], 2) == 1.0
    # tied gold values: b and c both have one source above them, so both are gold top-2
    assert precision_at_k([0.5, 0.4, 0.4, 0.1], [1, 3, 2, 0], 2) == 1.0
    # k above the number of sources: every source is picked and every source is gold
    assert precision_at_k(t, [1, 1, 1, 1, 1], 10) == 1.0


def test_best_of_k_regret_with_ties_at_the_cut():
    t = [0.5, 0.4, 0.3, 0.2, 0.1]
    assert best_of_k_regret(t, [1, 3, 2, 2, 2], 2) == pytest.approx(0.1)  # b sure; a left out of the tie
    # b sure, then one of (a, c, d): the best is 0.5 with probability 1/3, else b's 0.4
    assert best_of_k_regret(t, [2, 3, 2, 2, 1], 2) == pytest.approx(0.5 - (0.5 + 0.4 + 0.4) / 3)
    # two of five at random: the pair's best is a in 4 of 10 pairs, b in 3, c in 2, d in 1
    assert best_of_k_regret(t, [0] * 5, 2) == pytest.approx(0.5 - (4 * 0.5 + 3 * 0.4 + 2 * 0.3 + 0.2) / 10)
    # in the metric's units: a transfer scale of 10 gives 10 times the regret (Regret@k does not move)
    big = [10 * x for x in t]
    assert best_of_k_regret(big, [2, 3, 2, 2, 1], 2) == pytest.approx(10 * best_of_k_regret(t, [2, 3, 2, 2, 1], 2))
    assert regret_at_k(big, [1, 2, 3, 4, 5], 2) == pytest.approx(regret_at_k(t, [1, 2, 3, 4, 5], 2))


def test_random_expectation_of_every_score_matches_the_all_tied_ranking():
    tr = [0.9, 0.1, 0.5, -0.3, 0.2, 0.0]
    tied = [0.0] * len(tr)
    sampled = random_expectation(tr, tr, 2, draws=4000, seed=1)
    assert sampled["ndcg_linear"] == pytest.approx(linear_gain_ndcg(tr, tied), abs=0.01)
    assert sampled["precision"] == pytest.approx(precision_at_k(tr, tied, 2), abs=0.02)
    assert sampled["best_regret"] == pytest.approx(best_of_k_regret(tr, tied, 2), abs=0.02)
    assert random_expectation([-0.2, -0.1, 0.0], [1, 2, 3], 2, draws=10)["ndcg_linear"] is None


# ---------------------------------------------------------------- every method on the same targets


GOLD = {"t1": {"a": 0.3, "b": 0.1, "c": 0.2, "d": -0.1},
        "t2": {"a": -0.2, "b": 0.4, "c": 0.0, "d": 0.1},
        "t3": {"a": -0.1, "b": -0.3, "c": 0.0, "d": -0.2}}  # nothing helps t3
PERF = {t: {} for t in GOLD}  # Regret@k on the transfer itself


def test_a_target_a_method_cannot_score_gets_the_random_expectation():
    scores = {"m": {"t1": {"a": 4, "c": 3, "b": 2, "d": 1}, "t3": {"a": 1, "b": 2, "c": 3, "d": 4}},
              "blind": {}}
    res = score_rankings(GOLD, PERF, scores, k=2, draws=200, n_boot=500)
    assert res["filled"] == {"m": ["t2"], "blind": ["t1", "t2", "t3"]}
    assert res["per_target"]["m"]["t2"] == res["per_target"]["random"]["t2"]
    assert res["per_target"]["blind"] == res["per_target"]["random"]
    for m in ("m", "blind", "random"):
        assert res["summary"][m]["n_targets"] == 3
    assert res["summary"]["m"]["n_filled"] == 1 and res["summary"]["random"]["n_filled"] == 0
    # scored on t1 and t3, random's values on t2: the mean is over all three
    m_t1 = res["per_target"]["m"]["t1"]["precision"]
    assert m_t1 == 1.0
    want = (1.0 + res["per_target"]["random"]["t2"]["precision"] + res["per_target"]["m"]["t3"]["precision"]) / 3
    assert res["summary"]["m"]["precision"]["mean"] == pytest.approx(want)
    # against random, the filled target contributes a difference of exactly 0
    d = res["paired"]["m - random"]["ndcg"]
    per = res["per_target"]
    assert d["mean"] == pytest.approx(sum(per["m"][t]["ndcg"] - per["random"][t]["ndcg"] for t in ("t1", "t3")) / 3)


def test_a_target_with_no_positive_transfer_leaves_linear_ndcg_for_every_method():
    scores = {"m": {t: {"a": 4, "b": 3, "c": 2, "d": 1} for t in GOLD}}
    res = score_rankings(GOLD, PERF, scores, k=2, draws=200, n_boot=500)
    assert res["undefined"] == {"ndcg_linear": ["t3"]}
    for m in ("m", "random"):
        assert res["per_target"][m]["t3"]["ndcg_linear"] is None
        assert res["summary"][m]["ndcg_linear"]["n"] == 2 and res["summary"][m]["ndcg"]["n"] == 3
    want = np.mean([linear_gain_ndcg(list(GOLD[t].values()), [4, 3, 2, 1]) for t in ("t1", "t2")])
    assert res["summary"]["m"]["ndcg_linear"]["mean"] == pytest.approx(want)
    assert res["paired"]["m - random"]["ndcg_linear"]["n"] == 2 and res["paired"]["m - random"]["precision"]["n"] == 3
    json.dumps(res, allow_nan=False)  # no NaN in what is written: an undefined value is null


def test_paired_differences_by_hand():
    scores = {"good": {t: {s: v for s, v in g.items()} for t, g in GOLD.items()},  # the gold order itself
              "bad": {t: {s: -v for s, v in g.items()} for t, g in GOLD.items()}}
    res = score_rankings(GOLD, PERF, scores, k=2, draws=100, n_boot=2000, seed=3)
    per = res["per_target"]
    for s in ("ndcg", "ndcg_linear", "precision", "best_regret", "regret"):
        diffs = [per["good"][t][s] - per["bad"][t][s] for t in GOLD
                 if per["good"][t][s] is not None and per["bad"][t][s] is not None]
        mean, lo, hi = bootstrap_mean_ci(diffs, 2000, seed=3)
        row = res["paired"]["good - bad"][s]
        assert (row["mean"], row["lo"], row["hi"], row["n"]) == pytest.approx((mean, lo, hi, len(diffs)))
        assert res["paired"]["bad - good"][s]["mean"] == pytest.approx(-mean)
    assert res["summary"]["good"]["precision"]["mean"] == 1.0 and res["summary"]["good"]["best_regret"]["mean"] == 0
    assert res["paired"]["good - bad"]["precision"]["lo"] > 0 and res["paired"]["good - bad"]["best_regret"]["hi"] < 0
    assert set(res["paired"]) == {"good - bad", "bad - good", "good - random", "random - good", "bad - random",
                                  "random - bad"}


def test_a_source_a_method_did_not_score_ranks_last():
    part = {"m": {"t1": {"a": 3, "c": 2, "b": 1}}}
    full = {"m": {"t1": {"a": 3, "c": 2, "b": 1, "d": 0}}}
    gold = {"t1": GOLD["t1"]}
    a = score_rankings(gold, {"t1": {}}, part, k=2, draws=50, n_boot=200)
    b = score_rankings(gold, {"t1": {}}, full, k=2, draws=50, n_boot=200)
    assert a["per_target"]["m"] == b["per_target"]["m"] and not a["filled"]
    assert a["per_target"]["m"]["t1"]["ndcg"] == pytest.approx(1.0)  # every source, the unscored one last


# ---------------------------------------------------------------- the CLI on a fixture matrix


def _fixture_matrix(tmp_path: Path) -> Path:
    """Three targets x 4 sources: sports_understanding has no input outside its evaluation examples (so RoE,
    DSIR and hybrid cannot score it), zoo_statements has no positive transfer, and arith/addition has its own
    family (arith) among the sources."""
    from insta.catalogs import load_catalog

    sports = [ex.id for ex in load_catalog("bbh", str(DATA)).get("sports_understanding").iter_examples()]
    transfer = {"bigbench:animal_facts": [0.10, 0.40, 0.25, -0.05],
                "bbh:sports_understanding": [-0.20, 0.05, 0.30, 0.10],
                "bigbench:zoo_statements": [-0.10, -0.30, 0.0, -0.20],
                "bigbench:arith/addition": [0.50, 0.20, -0.10, 0.15]}
    rows = [{"target": t, "source": s, "seed": 0, "metric": "nll_per_token", "transfer": v}
            for t, vals in transfer.items() for s, v in zip(("arith", "plant_facts", "capitals", "color_names"), vals)]
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({"meta": {"source_catalog": "bigbench", "unit": "family",
                                         "eval_ids": {"bbh:sports_understanding": sports}}, "rows": rows}))
    return path


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[int, Path, Path]:
    out, md = tmp_path / f"{name}.json", tmp_path / f"{name}.md"
    code = cli.main(["eval-selection", "--transfer", str(_fixture_matrix(tmp_path)), "--data-dir", str(DATA),
                     "--encoder", "hashing", "--target-samples", "4", "--library-size", "8", "--regret-k", "2",
                     "--json", str(out), "--markdown", str(md), "-q", *extra])
    return code, out, md


def test_cli_scores_every_method_on_the_same_targets_and_writes_the_tables(tmp_path):
    code, out, md = _run(tmp_path, "a", "--reference", "roe", "--reference", "insta-mean")
    assert code == 0
    res = json.loads(out.read_text())
    targets = ["bigbench:animal_facts", "bbh:sports_understanding", "bigbench:zoo_statements",
               "bigbench:arith/addition"]
    assert res["targets_scored"] == targets
    # RoE, DSIR and hybrid read unlabelled inputs: sports_understanding has none besides its evaluation examples
    assert res["filled"] == {m: ["bbh:sports_understanding"] for m in ("hybrid", "roe", "dsir")}
    assert res["target_sample_ids"]["bbh:sports_understanding"] == []
    assert len(res["target_sample_ids"]["bigbench:animal_facts"]) == 4 and res["seed"] == 0
    assert res["per_target"]["roe"]["bbh:sports_understanding"] == res["per_target"]["random"][
        "bbh:sports_understanding"]
    assert res["undefined"] == {"ndcg_linear": ["bigbench:zoo_statements"]}
    assert res["sources_left_out"] == {"bigbench:arith/addition": ["arith"]}
    assert res["references"] == ["roe", "insta-mean"]
    for m, row in res["summary"].items():
        assert row["n_targets"] == 4 and row["ndcg"]["n"] == 4 and row["ndcg_linear"]["n"] == 3, m
        assert 0 <= row["precision"]["mean"] <= 1 and row["best_regret"]["mean"] >= 0
    n = len(res["summary"])
    assert len(res["paired"]) == n * (n - 1)  # the JSON keeps every pair
    text = md.read_text()
    assert ("| method | exp NDCG [95% CI] | linear NDCG [95% CI] | precision@2 [95% CI] | best-of-2 regret [95% CI] "
            "| Regret@2 (old) [95% CI] | targets filled |") in text
    assert text.index("#### Against roe") < text.index("#### Against insta-mean") < text.index(
        "### Targets filled with random's expectation")
    assert "| method - roe | Δ exp NDCG [95% CI] | Δ linear NDCG [95% CI] |" in text
    assert "roe: 1 target(s): bbh:sports_understanding." in text
    assert "undefined where no source has a transfer above 0" in text and "bigbench:zoo_statements" in text
    assert "bigbench:arith/addition: its relatives arith left out" in text


def test_cli_rerun_gives_the_same_json(tmp_path):
    code_a, a, _ = _run(tmp_path, "a")
    code_b, b, md_b = _run(tmp_path, "b")
    assert code_a == code_b == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra == rb and ra["seed"] == 0
    assert ra["references"] == ["insta-mean", "roe"]  # the default list, those scored (no hybrid-0.5 label here)
    assert "#### Against roe" in md_b.read_text()
    code_c, c, _ = _run(tmp_path, "c", "--seed", "7")  # the seed draws the target inputs, and is recorded
    rc = json.loads(c.read_text())
    assert code_c == 0 and rc["seed"] == 7
    assert rc["target_sample_ids"]["bigbench:animal_facts"] != ra["target_sample_ids"]["bigbench:animal_facts"]


def test_cli_unknown_reference_is_one_line(tmp_path, capsys):
    code, out, _ = _run(tmp_path, "a", "--reference", "no-such-method")
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--reference no-such-method" in err and len(err.splitlines()) == 1
    assert not out.exists()
