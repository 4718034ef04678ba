"""prior-transfer and popular-source: selection from a measured transfer matrix for targets it does not hold.

Hand-computed scores on a tiny matrix; the nested leave-one-target-out fit never reads the held-out column;
sources the matrix lacks are still ranked; bad matrices are one clear error line; the CLI's --prior-matrix."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.errors import InstaError
from insta.methods import load_method
from insta.matrix.matrix import TransferMatrix
from insta.matrix.prior import (
    PriorMatrix,
    combine,
    fit_weights,
    pivot_similarity,
    pivot_weights,
    prior_and_pivot,
    weight_grid,
)
from insta.matrix.topk_metrics import rank_linear_ndcg

DATA = Path(__file__).parent / "fixtures" / "experiment" / "data"
SOURCES = ["animal_trivia", "arith", "color_names", "plant_facts", "zoo_statements", "story_writing"]
TARGETS = ["bigbench:animal_facts", "bigbench:capitals", "bigbench:movie_sentiment", "bigbench:hindu_knowledge"]
#: transfer[target][source]: animal and plant facts help the fact targets, arithmetic helps nothing
TRANSFER = {
    "bigbench:animal_facts": [0.30, -0.10, 0.05, 0.25, 0.28, 0.00],
    "bigbench:capitals": [0.10, -0.05, 0.02, 0.12, 0.08, 0.01],
    "bigbench:movie_sentiment": [0.02, -0.02, 0.04, 0.01, 0.03, 0.10],
    "bigbench:hindu_knowledge": [0.15, -0.20, 0.00, 0.10, 0.12, 0.02],
}


def _matrix(transfer=TRANSFER, seeds=(0, 1)) -> TransferMatrix:
    rows = [{"target": t, "source": s, "seed": seed, "metric": "acc", "value": None, "base_value": None,
             "transfer": v + (0.001 * seed)}
            for t, vals in transfer.items() for s, v in zip(SOURCES, vals) for seed in seeds]
    return TransferMatrix(rows, {"source_catalog": "bigbench"})


@pytest.fixture(scope="module")
def bigbench():
    return load_catalog("bigbench", DATA)


@pytest.fixture(scope="module")
def pool(bigbench):
    from insta.engine.pool import merge_families

    fams = merge_families(bigbench, "bigbench")
    return Catalog("bigbench", [fams.get(s) for s in SOURCES + ["animal_facts_hard"]])


def _method(name="prior-transfer", matrix=None, bigbench=None, **opts):
    return load_method(name, prior_matrix=matrix or _matrix(), encoder="hashing", target_catalog=bigbench, **opts)


# ---------------------------------------------------------------- hand-computed arithmetic


def test_percentiles_prior_and_pivot_by_hand():
    pm = PriorMatrix(["A", "B"], ["s1", "s2", "s3"], np.array([[0.3, 0.1, 0.2], [0.0, 0.5, np.nan]]), "acc")
    pct = pm.percentiles()
    # A: s2 < s3 < s1 -> 0, 0.5, 1; B: two measured -> 0 and 1, s3 missing
    assert np.allclose(pct[0], [1.0, 0.0, 0.5]) and np.allclose(pct[1, :2], [0.0, 1.0]) and np.isnan(pct[1, 2])
    w = pivot_weights(np.array([1.0, -1.0]), 1.0)
    assert np.allclose(w, [math.e / (math.e + math.exp(-1)), math.exp(-1) / (math.e + math.exp(-1))])
    prior, pivot = prior_and_pivot(pct, w)
    assert np.allclose(prior, [0.5, 0.5, 0.5])  # s3: only A measured it
    assert np.allclose(pivot, [w[0] * 1.0 + w[1] * 0.0, w[0] * 0.0 + w[1] * 1.0, 0.5])


def test_combined_score_by_hand():
    prior = np.array([0.9, 0.5, 0.1, np.nan])  # the fourth source is not in the matrix
    pivot = np.array([0.2, 0.8, 0.5, np.nan])
    sim = np.array([0.1, 0.2, 0.3, 0.9])
    allowed = np.array([True, True, True, True])
    score, parts = combine((0.5, 0.25, 0.25), prior, pivot, sim, allowed)
    zp = (np.array([0.9, 0.5, 0.1]) - 0.5) / np.std([0.9, 0.5, 0.1])
    zv = (np.array([0.2, 0.8, 0.5]) - 0.5) / np.std([0.2, 0.8, 0.5])
    zs = (sim - sim.mean()) / sim.std()
    expect = 0.5 * np.r_[zp, 0] + 0.25 * np.r_[zv, 0] + 0.25 * zs
    assert np.allclose(score, expect) and np.allclose(parts.sum(axis=0), expect)


def test_rank_linear_ndcg_by_hand():
    # gold order c > a > b; the method ranks a, c, b: relevances 2, 3, 1 at positions 1..3
    dcg = 2 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert rank_linear_ndcg([0.2, 0.1, 0.3], [3, 1, 2]) == pytest.approx(dcg / ideal)


def test_grid_is_the_simplex():
    grid = weight_grid(0.25)
    assert len(grid) == 15 and all(abs(sum(w) - 1) < 1e-12 and min(w) >= 0 for w in grid)


def test_pivot_similarity_averages_known_signals():
    inst = np.array([0.1, 0.3, 0.2])
    space = np.array([1.0, np.nan, 0.0])  # unknown for the second target
    z_inst = (inst - inst.mean()) / inst.std()
    z_space_known = np.array([1.0, -1.0])  # z over the two known values
    got = pivot_similarity([inst, space])
    assert np.allclose(got, [(z_inst[0] + z_space_known[0]) / 2, z_inst[1], (z_inst[2] + z_space_known[1]) / 2])


def test_popular_source_scores_are_the_z_scored_mean_percentiles(bigbench, pool):
    m = _method("popular-source", bigbench=bigbench)
    res = m.select(bigbench.get("sports_understanding"), pool, 7)
    arr = np.array([[np.mean([v, v + 0.001]) for v in TRANSFER[t]] for t in TARGETS])
    pct = np.vstack([np.argsort(np.argsort(row)) / (len(row) - 1) for row in arr])  # no ties in TRANSFER
    prior = pct.mean(axis=0)
    cand = np.r_[prior]  # animal_facts_hard is not in the matrix: 0 (the candidates' mean)
    z = (cand - cand.mean()) / cand.std()
    got = {s.task: s.score for s in res.selected}
    for s, v in zip(SOURCES, z):
        assert got[s] == pytest.approx(v)
    assert got["animal_facts_hard"] == 0.0
    assert all(s.why["driver"] == "prior" for s in res.selected if s.task != "animal_facts_hard")


# ---------------------------------------------------------------- fitting: nested leave-one-target-out


def test_held_out_column_never_informs_its_weights(bigbench, pool):
    """The target animal_facts is a matrix target: its column is poisoned (reversed, huge) and the fit and the
    scores stay identical; the same poison changes the fit of a target the matrix does not hold."""
    poisoned = {**TRANSFER, "bigbench:animal_facts": [-1e6 * v for v in TRANSFER["bigbench:animal_facts"]]}
    target = bigbench.get("animal_facts")
    clean = _method(bigbench=bigbench).select(target, pool, 5)
    dirty = _method(matrix=_matrix(poisoned), bigbench=bigbench).select(target, pool, 5)
    assert clean.config["prior_transfer_fit"] == dirty.config["prior_transfer_fit"]
    assert [(s.task, s.score) for s in clean.selected] == [(s.task, s.score) for s in dirty.selected]
    assert "bigbench:animal_facts" not in clean.config["prior_transfer_fit"]["folds"]
    assert clean.config["prior_matrix_dropped"] == {"bigbench:animal_facts": "the selection target itself"}
    # the poison is potent where the column may be read: a new target's fit scores that fold differently
    new = bigbench.get("sports_understanding")
    fold_clean = _method(bigbench=bigbench).select(new, pool, 5).config["prior_transfer_fit"]["folds"]
    fold_dirty = _method(matrix=_matrix(poisoned), bigbench=bigbench).select(new, pool, 5).config[
        "prior_transfer_fit"]["folds"]
    assert fold_clean["bigbench:animal_facts"] != fold_dirty["bigbench:animal_facts"]


def test_fit_prefers_the_component_that_predicts_the_held_out_columns():
    """Folds where the prior predicts every column and similarity is noise: the fit puts its weight on the prior."""
    rng = np.random.default_rng(0)
    base = np.linspace(0, 1, 8)
    folds = []
    from insta.matrix.prior import Fold

    for i in range(4):
        pct = np.vstack([base + rng.normal(0, 0.01, 8) for _ in range(3)])
        folds.append(Fold(f"t{i}", pct, rng.normal(size=3), rng.normal(size=8), np.ones(8, bool),
                          base + rng.normal(0, 0.01, 8)))
    fit = fit_weights(folds)
    assert fit.weights[2] == 0.0 and fit.weights[0] + fit.weights[1] == 1.0 and fit.objective > 0.99


def test_fitted_weights_reproduce_the_selection(bigbench, pool):
    target = bigbench.get("sports_understanding")
    fitted = _method(bigbench=bigbench).select(target, pool, 7)
    fit = fitted.config["prior_transfer_fit"]
    again = _method(bigbench=bigbench, weights=fit["weights"], temperature=fit["temperature"]).select(target, pool, 7)
    ranked = [(s.task, round(s.score, 9)) for s in fitted.selected]
    assert [(s.task, round(s.score, 9)) for s in again.selected] == ranked
    assert "prior_transfer_fit" not in again.config and again.config["weights"] == fitted.config["weights"]


# ---------------------------------------------------------------- sources absent from the matrix


def test_sources_absent_from_the_matrix_are_ranked(bigbench, pool):
    target = bigbench.get("sports_understanding")  # not in the matrix; animal_facts_hard is in no row
    res = _method(bigbench=bigbench, weights=[0, 0, 1]).select(target, pool, 7)
    by_task = {s.task: s for s in res.selected}
    absent = by_task["animal_facts_hard"]
    assert math.isfinite(absent.score) and absent.why["driver"] == "similarity" and absent.why["in_matrix"] is False
    # similarity alone: the scores are the z-scored INSTA scores, the absent source among them
    insta = load_method("insta-mean", encoder="hashing").select(target, pool, 7)
    assert [s.task for s in res.selected] == [s.task for s in insta.selected]
    fitted = _method(bigbench=bigbench).select(target, pool, 7)
    assert "animal_facts_hard" in {s.task for s in fitted.selected}
    assert all(math.isfinite(s.score) for s in fitted.selected)


def test_a_pool_without_matrix_rows_ranks_by_similarity_only_when_some_source_matches(bigbench):
    other = Catalog("bigbench", [bigbench.get("capitals"), bigbench.get("color_names")])
    with pytest.raises(InstaError, match="none of the prior matrix's 6 sources is a task or family of pool"):
        _method(matrix=TransferMatrix([{**r, "source": r["source"] + "_x"} for r in _matrix().rows],
                                      {"source_catalog": "bigbench"}), bigbench=bigbench).select(
            bigbench.get("sports_understanding"), other, 1)


# ---------------------------------------------------------------- bad matrices


def test_bad_matrices_are_one_clear_error(bigbench, pool, tmp_path):
    nan = _matrix()
    nan.rows[3]["transfer"] = float("nan")
    with pytest.raises(InstaError, match="is not a finite number"):
        _method(matrix=nan, bigbench=bigbench)
    with pytest.raises(InstaError, match="has no metric 'bleu'"):
        _method(matrix=_matrix(), bigbench=bigbench, metric="bleu")
    unknown = TransferMatrix([{**r, "target": "bigbench:no_such_task"} if r["target"] == TARGETS[0] else r
                              for r in _matrix().rows], {"source_catalog": "bigbench"})
    with pytest.raises(InstaError, match="prior matrix target 'bigbench:no_such_task' is not a task of catalog"):
        _method(matrix=unknown, bigbench=bigbench).select(bigbench.get("sports_understanding"), pool, 3)
    thin = TransferMatrix([r for r in _matrix().rows if r["target"] == TARGETS[0]
                           or r["source"] in SOURCES[:2]], {"source_catalog": "bigbench"})
    m = _method(matrix=thin, bigbench=bigbench)  # three targets have two sources: left out, one target left
    assert set(m.prior.dropped) == set(TARGETS[1:])
    with pytest.raises(InstaError, match="leaves 1 target"):
        m.select(bigbench.get("sports_understanding"), pool, 3)
    with pytest.raises(InstaError, match="no target with at least 3 measured sources"):
        _method(matrix=TransferMatrix([r for r in _matrix().rows if r["source"] in SOURCES[:2]]), bigbench=bigbench)
    with pytest.raises(InstaError, match="needs a prior transfer matrix"):
        load_method("prior-transfer")
    with pytest.raises(InstaError, match="weights must be three numbers"):
        _method(bigbench=bigbench, weights=[1, -1, 0])
    with pytest.raises(InstaError, match="need temperature"):
        _method(bigbench=bigbench, weights=[0, 1, 0])
    bad = tmp_path / "m.csv"
    bad.write_text("target,source,transfer\nbigbench:capitals,arith,nan\n")
    with pytest.raises(InstaError, match="not finite"):
        _method(matrix=str(bad), bigbench=bigbench)


def test_missing_cells_are_left_out_of_that_sources_means(bigbench, pool):
    rows = [r for r in _matrix().rows if not (r["target"] == TARGETS[1] and r["source"] == "arith")]
    m = _method("popular-source", matrix=TransferMatrix(rows, {"source_catalog": "bigbench"}), bigbench=bigbench)
    res = m.select(bigbench.get("sports_understanding"), pool, 7)
    assert res.config["n_missing_cells"] == 1
    arith = next(s for s in res.selected if s.task == "arith")
    assert arith.why["n_targets_measured"] == 3


# ---------------------------------------------------------------- the CLI


def _write_matrix(path: Path) -> Path:
    path.write_text(json.dumps({"meta": {"source_catalog": "bigbench"}, "rows": _matrix().rows}))
    return path


def test_cli_prior_matrix_selects_and_explains(tmp_path, capsys):
    from insta.cli import main

    mfile = _write_matrix(tmp_path / "prior.json")
    out = tmp_path / "sel.json"
    rc = main(["select", "--data-dir", str(DATA), "--catalog", "bigbench", "--task", "sports_understanding",
               "--prior-matrix", str(mfile), "-e", "hashing", "-k", "3", "--json", str(out)])
    assert rc == 0
    sel = json.loads(out.read_text())
    assert sel["method"] == "prior-transfer" and len(sel["selected"]) == 3
    assert set(sel["config"]["prior_transfer_fit"]["weights"]) == {"prior", "pivot", "similarity"}
    shown = capsys.readouterr().out
    assert any(word in shown for word in ("pivot bigbench:", "prior: mean percentile", "similarity"))
    # the same through --config, and with the fitted weights given back
    cfg = tmp_path / "select.yaml"
    fit = sel["config"]["prior_transfer_fit"]
    cfg.write_text(f"prior_matrix: {mfile}\nmethod: prior-transfer\n"
                   f"option: ['weights={json.dumps(list(fit['weights'].values()))}', "
                   f"'temperature={fit['temperature']}']\n")
    out2 = tmp_path / "sel2.json"
    assert main(["select", "--config", str(cfg), "--data-dir", str(DATA), "--catalog", "bigbench", "--task",
                 "sports_understanding", "-e", "hashing", "-k", "3", "--json", str(out2), "-q"]) == 0
    again = json.loads(out2.read_text())
    assert [s["task"] for s in again["selected"]] == [s["task"] for s in sel["selected"]]


def test_cli_bad_prior_matrix_is_one_line(tmp_path, capsys):
    from insta.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("target,source,transfer\nbigbench:capitals,arith,oops\n")
    rc = main(["select", "--data-dir", str(DATA), "--catalog", "bigbench", "--task", "sports_understanding",
               "--prior-matrix", str(bad), "-e", "hashing"])
    err = capsys.readouterr().err
    assert rc != 0 and "is not a number" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = main(["select", "--data-dir", str(DATA), "--catalog", "bigbench", "--task", "sports_understanding",
               "--prior-matrix", str(_write_matrix(tmp_path / "p.json")), "--method", "roe"])
    err = capsys.readouterr().err
    assert rc != 0 and "--prior-matrix applies to prior-transfer / popular-source" in err


# ---------------------------------------------------------------- top-k metrics of the evaluation


def test_precision_and_best_of_k_regret_by_hand():
    from insta.matrix.topk_metrics import best_of_k_regret, precision_at_k

    t = [0.3, 0.1, 0.2, 0.0]
    assert precision_at_k(t, [4, 3, 2, 1], 2) == 0.5  # picks 0.3 and 0.1; gold top 2 is 0.3 and 0.2
    assert best_of_k_regret(t, [4, 3, 2, 1], 2) == 0.0
    assert best_of_k_regret(t, [1, 4, 3, 2], 2) == pytest.approx(0.1)  # picks 0.1 and 0.2
    tied = [1, 1, 1, 1]
    assert precision_at_k(t, tied, 1) == pytest.approx(0.25)
    assert best_of_k_regret(t, tied, 1) == pytest.approx(0.3 - 0.15)  # a random pick: the mean
    # two of four at random: the six pairs' best is 0.3 three times, 0.2 twice, 0.1 once
    assert best_of_k_regret(t, tied, 2) == pytest.approx(0.3 - (3 * 0.3 + 2 * 0.2 + 0.1) / 6)
    # a sure pick above a split tie: 0.1 sure, then one of (0.3, 0.2, 0.0) at random
    assert best_of_k_regret(t, [1, 2, 1, 1], 2) == pytest.approx(0.3 - (0.3 + 0.2 + 0.1) / 3)


def test_a_family_row_serves_each_of_its_tasks_and_counts_once_in_the_fit(bigbench, monkeypatch):
    import insta.matrix.prior as prior_mod

    pool = Catalog("bigbench", [t for t in bigbench if t.family in SOURCES])  # arith: addition and subtraction
    seen = {}
    real = prior_mod.fit_weights

    def spy(folds, *a, **kw):
        seen["folds"] = folds
        return real(folds, *a, **kw)

    monkeypatch.setattr(prior_mod, "fit_weights", spy)
    res = _method(bigbench=bigbench).select(bigbench.get("sports_understanding"), pool, len(pool))
    arith = [s for s in res.selected if s.task.startswith("arith/")]
    assert len(arith) == 2 and arith[0].why["prior_percentile"] == arith[1].why["prior_percentile"]
    for fold in seen["folds"]:  # one gold entry per matrix source, although arith has two tasks in the pool
        assert int(np.isfinite(fold.gold).sum()) == len(SOURCES)


@pytest.mark.slow
def test_the_committed_matrix_serves_real_targets_inside_and_outside_it():
    """The v1 matrix with the real BIG-bench / BBH catalogs: a new target is fitted on all 12 targets, a matrix
    target on the other 11, and every one of the 40 sources is ranked with its why."""
    import os

    data = os.environ.get("INSTA_DATA_DIR")
    if not data or not (Path(data) / "bbh").is_dir():
        pytest.skip("BIG-bench / BBH data not in $INSTA_DATA_DIR")
    from insta.engine.pool import merge_families

    matrix = Path(__file__).resolve().parent.parent / "experiments" / "transfer-bigbench-smollm2" / "matrix.json"
    m = load_method("prior-transfer", prior_matrix=str(matrix), encoder="hashing", data_dir=data)
    families = merge_families(load_catalog("bigbench", data), "bigbench")
    pool = Catalog("bigbench", [families.get(s) for s in m.prior.sources])
    bbh = load_catalog("bbh", data)
    new = m.select(bbh.get("date_understanding"), pool, len(pool))
    inside = m.select(bbh.get("navigate"), pool, len(pool))
    assert len(new.selected) == len(inside.selected) == 40
    assert len(new.config["prior_transfer_fit"]["folds"]) == 12
    assert set(inside.config["prior_transfer_fit"]["folds"]) == set(m.prior.targets) - {"bbh:navigate"}
    assert inside.config["prior_matrix_dropped"] == {"bbh:navigate": "the selection target itself"}
    assert abs(sum(new.config["weights"].values()) - 1) < 1e-9
    pivots = {s.why.get("pivot_target") for s in inside.selected} - {None}
    if inside.config["weights"]["pivot"] > 0:  # every pivot named is a matrix target other than navigate
        assert pivots and pivots <= set(m.prior.targets) - {"bbh:navigate"}
    else:
        assert not pivots


def test_eval_selection_scores_prior_transfer_leaving_each_target_out(tmp_path, monkeypatch):
    """Through ``insta eval-selection``: the matrix scored is also the prior; each target's own column is left
    out of its ranking, and the matrix's targets come from --data-dir (no $INSTA_DATA_DIR)."""
    from insta import cli

    monkeypatch.delenv("INSTA_DATA_DIR", raising=False)
    mfile = tmp_path / "prior.json"
    mfile.write_text(json.dumps({"meta": {"source_catalog": "bigbench", "unit": "family"}, "rows": _matrix().rows}))
    methods = tmp_path / "methods.yaml"
    methods.write_text(f"- {{method: prior-transfer, options: {{prior_matrix: {mfile}, encoder: hashing}}}}\n"
                       f"- {{method: popular-source, options: {{prior_matrix: {mfile}}}}}\n")
    out = tmp_path / "scores.json"
    assert cli.main(["eval-selection", "--transfer", str(mfile), "--data-dir", str(DATA), "--methods", str(methods),
                     "--encoder", "hashing", "--regret-k", "2", "--json", str(out), "-q"]) == 0
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"prior-transfer", "popular-source", "random"}
    assert res["summary"]["prior-transfer"]["n_targets"] == len(TARGETS)


def test_cli_target_examples_feed_the_pivots(tmp_path):
    from insta.cli import main

    inputs = tmp_path / "inputs.txt"
    inputs.write_text("Is a cat a mammal?\nDo birds lay eggs?\nIs a whale a fish?\n")
    out = tmp_path / "sel.json"
    assert main(["select", "--data-dir", str(DATA), "--catalog", "bigbench", "-i", "Answer animal questions.",
                 "--target-examples", str(inputs), "--prior-matrix", str(_write_matrix(tmp_path / "p.json")),
                 "-e", "hashing", "-k", "2", "--json", str(out), "-q"]) == 0
    sel = json.loads(out.read_text())
    assert "target_samples" in sel["consumed"] and sel["config"]["params"]["target_inputs"] is True
    assert sel["target"]["n_samples"] == 3
