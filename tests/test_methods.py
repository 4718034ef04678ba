"""The selection-method interface on hand-written fixture tasks: every method returns k distinct pool tasks,
never the target or its relatives; random is reproducible per seed; RoE's vote, BM25 and DSIR on constructed
cases; the training budget allocation."""
from pathlib import Path

import numpy as np
import pytest

from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.errors import InstaError
from insta.methods import (
    METHODS,
    allocate_budget,
    make_method,
    ngram_counts_builtin,
    relatives,
)
from insta.records import Example, Task

DATA = Path(__file__).parent / "fixtures" / "experiment" / "data"


@pytest.fixture(scope="module")
def catalogs():
    return load_catalog("bigbench", DATA), load_catalog("bbh", DATA)


def _samples(task, n=4):
    return [Example(id=e.id, input=e.input, references=[], options=e.options) for e in task.examples(n)]


ENC = {"encoder": "hashing"}
CASES = [
    ("insta-mean", ENC),
    ("insta-topk-vote", ENC),
    ("random", {"seed": 3}),
    ("roe", {**ENC, "library_size": 5}),
    ("lexical", {}),
    ("dsir", {"library_size": 5, "num_buckets": 512}),
]


@pytest.mark.parametrize("name,opts", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("target_ref", ["bigbench:animal_facts", "bbh:sports_understanding"])
def test_each_method_returns_k_distinct_pool_tasks_never_a_relative(catalogs, name, opts, target_ref):
    bigbench, bbh = catalogs
    cat, tid = target_ref.split(":")
    target = (bigbench if cat == "bigbench" else bbh).get(tid)
    method = make_method(name, **opts)
    res = method.select(target, bigbench, 3, target_samples=_samples(target))
    ids = res.task_ids
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(t in bigbench for t in ids)
    forbidden = {"animal_facts"} if tid == "animal_facts" else {"sports_understanding"}
    assert not forbidden & set(ids)
    assert forbidden <= set(res.excluded)
    assert res.consumed == list(method.consumes) and res.consumed
    assert [r.rank for r in res.ranked] == [1, 2, 3]
    scores = [r.score for r in res.ranked]
    assert scores == sorted(scores, reverse=True)
    d = res.to_dict()
    assert d["consumed_described"] and d["k"] == 3 and d["method"] == name


def test_bbh_target_excludes_its_bigbench_parent(catalogs):
    bigbench, bbh = catalogs
    target = bbh.get("sports_understanding")
    assert "sports_understanding" in relatives(target, bigbench)


def test_all_returns_every_pool_task_but_the_relatives(catalogs):
    bigbench, _ = catalogs
    target = bigbench.get("animal_facts")
    res = make_method("all").select(target, bigbench, 2)
    assert set(res.task_ids) == set(bigbench.ids) - {"animal_facts"}
    assert res.consumed == ["nothing"]


def test_random_is_reproducible_per_seed_and_ignores_the_target(catalogs):
    bigbench, bbh = catalogs
    a = make_method("random", seed=1).select(bigbench.get("animal_facts"), bigbench, 3).task_ids
    b = make_method("random", seed=1).select(bigbench.get("animal_facts"), bigbench, 3).task_ids
    assert a == b
    pool = bigbench.without(["animal_facts", "sports_understanding"])
    x = make_method("random", seed=1).select(bigbench.get("animal_facts"), pool, 3).task_ids
    y = make_method("random", seed=1).select(bbh.get("sports_understanding"), pool, 3).task_ids
    assert x == y  # same pool, same seed: the same draw whatever the target
    draws = {tuple(make_method("random", seed=s).select(bigbench.get("animal_facts"), pool, 3).task_ids)
             for s in range(6)}
    assert len(draws) > 1


class TableEncoder:
    def __init__(self, table):
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}

    def encode(self, texts):
        out = []
        for t in texts:
            key = next(k for k in self.table if k in t)
            out.append(self.table[key])
        return np.stack(out)

    def describe(self):
        return {"name": "table"}


def _task(tid, inputs):
    exs = [Example(id=f"{tid}:{i}", input=x, references=["a"], options=["a", "b"], label=0) for i, x in enumerate(inputs)]
    return Task(id=tid, instructions=[f"instruction of {tid}"], catalog="toy", loader=lambda: iter(exs))


def test_roe_majority_vote_on_a_constructed_case(monkeypatch):
    import insta.methods as m

    enc = TableEncoder({"alpha": [1, 0, 0], "beta": [0, 1, 0], "gamma": [0, 0, 1], "qa": [0.9, 0.1, 0],
                        "qb": [0.1, 0.9, 0.05]})
    monkeypatch.setitem(m._ENCODERS, "table", enc)
    pool = Catalog("toy", [_task("A", ["alpha one", "alpha two"]), _task("B", ["beta one"]),
                           _task("C", ["gamma one", "gamma two"])])
    target = Task(id="T", instructions=["x"], catalog="toy")
    samples = [Example(id=f"t{i}", input=x, references=[], options=["a", "b"]) for i, x in
               enumerate(["qb first", "qb second", "qa third"])]
    res = make_method("roe", encoder="table", library_size=10).select(target, pool, 3, target_samples=samples)
    assert res.task_ids == ["B", "A", "C"]
    votes = {r.task: r.detail["votes"] for r in res.ranked}
    assert votes == {"B": 2, "A": 1, "C": 0}
    assert res.ranked[0].detail["vote_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert "target_samples" in res.consumed


def test_roe_and_dsir_need_target_samples(catalogs):
    bigbench, _ = catalogs
    with pytest.raises(InstaError, match="unlabelled target instances"):
        make_method("roe", encoder="hashing").select(bigbench.get("animal_facts"), bigbench, 2)
    with pytest.raises(InstaError, match="unlabelled target instances"):
        make_method("dsir").select(bigbench.get("animal_facts"), bigbench, 2, target_samples=[])


def test_lexical_bm25_prefers_shared_words():
    pool = Catalog("toy", [
        Task(id="plants", instructions=["Decide whether statements about plants are true or false."], catalog="toy"),
        Task(id="movies", instructions=["Classify the sentiment of a movie review."], catalog="toy"),
        Task(id="maths", instructions=["Add two numbers."], catalog="toy"),
    ])
    target = Task(id="t", instructions=["Are these statements about plants true?"], catalog="toy")
    res = make_method("lexical").select(target, pool, 2)
    assert res.task_ids[0] == "plants"
    assert res.params["scorer"].startswith("BM25")


def test_dsir_builtin_featurizer_matches_the_package():
    import importlib

    pkg = importlib.import_module("data_selection.hashed_ngram_dsir")
    text = "Q: Is the following sentence plausible? \"Messi scored a penalty-kick.\"\nA:"
    assert (ngram_counts_builtin(text, 2, 1000) == pkg.get_ngram_counts(text, n=2, num_buckets=1000)).all()


def test_dsir_ranks_the_task_whose_ngrams_match_the_target():
    pool = Catalog("toy", [
        _task("colors", ["what color is the sky", "what color is grass", "what color is snow"]),
        _task("sums", ["what is two plus three", "what is four plus one", "what is six plus two"]),
        _task("caps", ["name the capital of france", "name the capital of peru", "name the capital of chad"]),
    ])
    target = Task(id="t", instructions=["x"], catalog="toy")
    samples = [Example(id=f"s{i}", input=x, references=[]) for i, x in
               enumerate(["what is one plus one", "what is nine plus two"])]
    for agg in ("per-ngram", "mean", "topk-share"):
        res = make_method("dsir", library_size=10, num_buckets=4096, aggregation=agg).select(
            target, pool, 2, target_samples=samples)
        assert res.task_ids[0] == "sums", agg


def test_insta_aligned_plumbing(tmp_path, catalogs, monkeypatch):
    """The aligned method loads its encoder by directory (a stand-in encoder here: no model load)."""
    import insta.methods as m
    from insta.encoder import HashingEncoder

    bigbench, _ = catalogs
    enc_dir = tmp_path / "aligned-enc"
    enc_dir.mkdir()
    (enc_dir / "config.json").write_text("{}")
    monkeypatch.setitem(m._ENCODERS, str(enc_dir), HashingEncoder(64))
    method = make_method("insta-aligned", encoder=str(enc_dir))
    res = method.select(bigbench.get("animal_facts"), bigbench, 3)
    assert method.aggregation == "topk-vote" and res.params["vote_depth"] == 10
    assert len(set(res.task_ids)) == 3 and "animal_facts" not in res.task_ids
    assert res.params["encoder"].startswith("aligned-enc-")


@pytest.mark.slow
def test_insta_aligned_with_a_real_sentence_transformers_dir(tmp_path, catalogs):
    bigbench, _ = catalogs
    from _tiny_encoder import make_tiny_encoder

    texts = [i for t in bigbench for i in t.instructions]
    enc_dir = tmp_path / "aligned"
    make_tiny_encoder(enc_dir, texts)
    method = make_method("insta-aligned", encoder=str(enc_dir))
    assert method.aggregation == "topk-vote"
    res = method.select(bigbench.get("animal_facts"), bigbench, 3)
    assert len(set(res.task_ids)) == 3 and "animal_facts" not in res.task_ids
    assert res.params["encoder"].startswith("aligned-")
    with pytest.raises(InstaError, match="needs an encoder"):
        make_method("insta-aligned")
    with pytest.raises(InstaError, match="does not exist"):
        make_method("insta-aligned", encoder=str(tmp_path / "missing")).params()


def test_k_larger_than_the_pool_and_unknown_methods(catalogs):
    bigbench, _ = catalogs
    with pytest.raises(InstaError, match="larger than the pool"):
        make_method("lexical").select(bigbench.get("animal_facts"), bigbench, 99)
    with pytest.raises(InstaError, match="unknown selection method 'insta-man'.*insta-mean"):
        make_method("insta-man")
    with pytest.raises(InstaError, match="unknown option"):
        make_method("lexical", depth=3)
    assert set(METHODS) == {"insta-mean", "insta-topk-vote", "insta-aligned", "all", "random", "roe", "lexical",
                            "dsir"}


def test_allocate_budget_keeps_the_total():
    assert allocate_budget(["a", "b", "c"], 10) == {"a": 4, "b": 3, "c": 3}
    many = [f"t{i}" for i in range(50)]
    alloc = allocate_budget(many, 20, seed=1)
    assert sum(alloc.values()) == 20 and set(alloc.values()) == {1}
    assert alloc == allocate_budget(many, 20, seed=1)
    with pytest.raises(InstaError):
        allocate_budget([], 10)


def test_insta_topk_vote_breaks_zero_vote_ties_by_mean_cosine_like_the_selector(monkeypatch):
    """With vote depth 1 only one task gets a vote; the rest tie at 0 and must rank by mean cosine (as
    ``insta select`` does), not alphabetically."""
    import insta.methods as m
    from insta.selection import Selector

    enc = TableEncoder({"target": [1, 0, 0], "near": [0.9, 0.1, 0], "mid": [0.6, 0.8, 0], "far": [0.1, 0.2, 0.97]})
    monkeypatch.setitem(m._ENCODERS, "table", enc)
    pool = Catalog("toy", [Task(id="a_far", instructions=["far"], catalog="toy"),
                           Task(id="b_mid", instructions=["mid"], catalog="toy"),
                           Task(id="c_near", instructions=["near"], catalog="toy")])
    target = Task(id="T", instructions=["target"], catalog="toy")
    res = make_method("insta-topk-vote", encoder="table", vote_depth=1).select(target, pool, 3)
    assert res.task_ids == ["c_near", "b_mid", "a_far"]
    assert [r.score for r in res.ranked][1:] == [0.0, 0.0]
    assert res.ranked[1].detail["mean_cosine"] > res.ranked[2].detail["mean_cosine"]
    direct = Selector(pool, enc, "topk-vote", vote_depth=1).select(["target"], 3)
    assert direct.task_ids == res.task_ids
