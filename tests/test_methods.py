"""The selection-method interface on hand-written fixture tasks: every method returns k distinct pool tasks,
never the target or its relatives; random is reproducible per seed; RoE's vote, BM25 and DSIR on constructed
cases; the training budget allocation."""
from pathlib import Path

import numpy as np
import pytest

from insta import encoder as insta_encoder

from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.errors import InstaError
from insta.methods import (
    METHODS,
    Selection,
    load_method,
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
    ("insta-max", ENC),
    ("insta-topk-vote", ENC),
    ("insta-format", ENC),
    ("hybrid", {**ENC, "library_size": 5}),
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
    method = load_method(name, **opts)
    res = method.select(target, bigbench, 3, target_samples=_samples(target))
    ids = res.task_ids
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(t in bigbench for t in ids)
    forbidden = {"animal_facts"} if tid == "animal_facts" else {"sports_understanding"}
    assert not forbidden & set(ids)
    assert forbidden <= set(res.excluded)
    assert res.consumed == list(method.consumes) and res.consumed
    assert [r.rank for r in res.selected] == [1, 2, 3]
    scores = [r.score for r in res.selected]
    assert scores == sorted(scores, reverse=True)
    assert all(r.why for r in res.selected)  # every pick says why
    d = res.to_dict()
    assert d["consumed_described"] and d["k"] == 3 and d["method"] == name
    assert Selection.from_dict(d).to_dict() == d


def test_bbh_target_excludes_its_bigbench_parent(catalogs):
    bigbench, bbh = catalogs
    target = bbh.get("sports_understanding")
    assert "sports_understanding" in relatives(target, bigbench)


def test_all_returns_every_pool_task_but_the_relatives(catalogs):
    bigbench, _ = catalogs
    target = bigbench.get("animal_facts")
    res = load_method("all").select(target, bigbench, 2)
    assert set(res.task_ids) == set(bigbench.ids) - {"animal_facts"}
    assert res.consumed == ["nothing"]


def test_random_is_reproducible_per_seed_and_ignores_the_target(catalogs):
    bigbench, bbh = catalogs
    a = load_method("random", seed=1).select(bigbench.get("animal_facts"), bigbench, 3).task_ids
    b = load_method("random", seed=1).select(bigbench.get("animal_facts"), bigbench, 3).task_ids
    assert a == b
    pool = bigbench.without(["animal_facts", "sports_understanding"])
    x = load_method("random", seed=1).select(bigbench.get("animal_facts"), pool, 3).task_ids
    y = load_method("random", seed=1).select(bbh.get("sports_understanding"), pool, 3).task_ids
    assert x == y  # same pool, same seed: the same draw whatever the target
    draws = {tuple(load_method("random", seed=s).select(bigbench.get("animal_facts"), pool, 3).task_ids)
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
    exs = [Example(id=f"{tid}:{i}", input=x, references=["a"], options=["a", "b"], label=0)
           for i, x in enumerate(inputs)]
    return Task(id=tid, instructions=[f"instruction of {tid}"], catalog="toy", loader=lambda: iter(exs))


def test_roe_majority_vote_on_a_constructed_case(monkeypatch):

    enc = TableEncoder({"alpha": [1, 0, 0], "beta": [0, 1, 0], "gamma": [0, 0, 1], "qa": [0.9, 0.1, 0],
                        "qb": [0.1, 0.9, 0.05]})
    monkeypatch.setitem(insta_encoder._ENCODERS, "table", enc)
    pool = Catalog("toy", [_task("A", ["alpha one", "alpha two"]), _task("B", ["beta one"]),
                           _task("C", ["gamma one", "gamma two"])])
    target = Task(id="T", instructions=["x"], catalog="toy")
    samples = [Example(id=f"t{i}", input=x, references=[], options=["a", "b"]) for i, x in
               enumerate(["qb first", "qb second", "qa third"])]
    res = load_method("roe", encoder="table", library_size=10).select(target, pool, 3, target_samples=samples)
    assert res.task_ids == ["B", "A", "C"]
    votes = {r.task: r.why["votes"] for r in res.selected}
    assert votes == {"B": 2, "A": 1, "C": 0}
    assert res.selected[0].why["vote_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert "target_samples" in res.consumed


def test_roe_and_dsir_need_target_samples(catalogs):
    bigbench, _ = catalogs
    with pytest.raises(InstaError, match="unlabelled target instances"):
        load_method("roe", encoder="hashing").select(bigbench.get("animal_facts"), bigbench, 2)
    with pytest.raises(InstaError, match="unlabelled target instances"):
        load_method("dsir").select(bigbench.get("animal_facts"), bigbench, 2, target_samples=[])


def test_lexical_bm25_prefers_shared_words():
    pool = Catalog("toy", [
        Task(id="plants", instructions=["Decide whether statements about plants are true or false."], catalog="toy"),
        Task(id="movies", instructions=["Classify the sentiment of a movie review."], catalog="toy"),
        Task(id="maths", instructions=["Add two numbers."], catalog="toy"),
    ])
    target = Task(id="t", instructions=["Are these statements about plants true?"], catalog="toy")
    res = load_method("lexical").select(target, pool, 2)
    assert res.task_ids[0] == "plants"
    assert res.params["scorer"].startswith("BM25")


#: ``data_selection.hashed_ngram_dsir`` 1.0.3 on these texts (n=2, 1000 buckets): its tokens and its non-zero
#: counts, recorded with the package installed (insta reproduces its featurizer without depending on it).
_DSIR_PACKAGE_REFERENCE = [
    ("Q: Is the following sentence plausible? \"Messi scored a penalty-kick.\"\nA:",
     ['q', ':', 'is', 'the', 'following', 'sentence', 'plausible', '?', '"', 'messi', 'scored', 'a', 'penalty', '-',
      'kick', '."', 'a', ':'],
     {59: 1, 154: 1, 169: 1, 179: 1, 202: 1, 263: 1, 266: 1, 288: 1, 332: 1, 335: 1, 358: 1, 400: 1, 417: 1, 437: 1,
      447: 1, 495: 1, 499: 2, 536: 1, 568: 1, 569: 1, 583: 1, 598: 1, 616: 1, 672: 1, 777: 1, 807: 1, 817: 1, 821: 1,
      868: 1, 870: 1, 935: 2, 955: 1, 963: 1}),
    ("Context: Rachida Brakni ( Hindi : \u0928\u093f\u0924\u0940\u0936 ; born 2 June 1963 )",
     ['context', ':', 'rachida', 'brakni', '(', 'hindi', ':', '\u0928\u093f\u0924\u0940\u0936', ';', 'born', '2',
      'june', '1963', ')'],
     {12: 1, 53: 1, 69: 1, 82: 1, 102: 1, 140: 1, 188: 1, 198: 1, 211: 1, 305: 1, 325: 1, 411: 1, 546: 1, 584: 1,
      618: 1, 644: 1, 652: 1, 736: 1, 841: 1, 861: 1, 902: 1, 907: 1, 908: 1, 935: 2, 952: 1, 987: 1}),
    ("What movie does this emoji describe? \U0001f3f4\U000e0067\U000e0062\u2764\ufe0f\U0001f5e1 choice: ran",
     ['what', 'movie', 'does', 'this', 'emoji', 'describe', '?', '\U0001f3f4\U000e0067\U000e0062\u2764', '\ufe0f',
      '\U0001f5e1', 'choice', ':', 'ran'],
     {6: 1, 22: 1, 108: 1, 133: 1, 139: 1, 169: 1, 264: 1, 297: 1, 329: 1, 353: 1, 354: 1, 388: 1, 497: 2, 646: 1,
      656: 1, 657: 1, 696: 1, 716: 1, 776: 1, 851: 1, 862: 1, 908: 1, 935: 1, 966: 1}),
]


def test_dsir_featurizer_matches_the_package_on_non_ascii_text():
    """Python's re splits Devanagari words at their vowel signs and emoji sequences differently from the regex
    engine nltk uses: the features must be the package's (the committed experiment's DSIR picks depend on it)."""
    from insta.methods import ngram_features, wordpunct_fallback

    texts = [t for t, _, _ in _DSIR_PACKAGE_REFERENCE]
    feats = ngram_features(texts, 2, 1000).toarray()
    for (t, tokens, counts), row in zip(_DSIR_PACKAGE_REFERENCE, feats):
        ref = np.zeros(1000, dtype=np.int64)
        ref[list(counts)] = list(counts.values())
        assert (ngram_counts_builtin(t, 2, 1000) == ref).all() and (row == ref).all()
        assert wordpunct_fallback()(t.lower()) == tokens


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
        res = load_method("dsir", library_size=10, num_buckets=4096, aggregation=agg).select(
            target, pool, 2, target_samples=samples)
        assert res.task_ids[0] == "sums", agg


def test_insta_aligned_plumbing(tmp_path, catalogs, monkeypatch):
    """The aligned method loads its encoder by directory (a stand-in encoder here: no model load)."""
    from insta.encoder import HashingEncoder

    bigbench, _ = catalogs
    enc_dir = tmp_path / "aligned-enc"
    enc_dir.mkdir()
    (enc_dir / "config.json").write_text("{}")
    monkeypatch.setitem(insta_encoder._ENCODERS, str(enc_dir), HashingEncoder(64))
    method = load_method("insta-aligned", encoder=str(enc_dir))
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
    method = load_method("insta-aligned", encoder=str(enc_dir))
    assert method.aggregation == "topk-vote"
    res = method.select(bigbench.get("animal_facts"), bigbench, 3)
    assert len(set(res.task_ids)) == 3 and "animal_facts" not in res.task_ids
    assert res.params["encoder"].startswith("aligned-")
    with pytest.raises(InstaError, match="needs an encoder"):
        load_method("insta-aligned")
    with pytest.raises(InstaError, match="does not exist"):
        load_method("insta-aligned", encoder=str(tmp_path / "missing")).params()


def test_k_larger_than_the_pool_and_unknown_methods(catalogs):
    bigbench, _ = catalogs
    with pytest.raises(InstaError, match="larger than the pool"):
        load_method("lexical").select(bigbench.get("animal_facts"), bigbench, 99)
    with pytest.raises(InstaError, match="unknown selection method 'insta-man'.*insta-mean"):
        load_method("insta-man")
    with pytest.raises(InstaError, match="unknown option"):
        load_method("lexical", depth=3)
    assert set(METHODS) == {"insta-mean", "insta-max", "insta-topk-vote", "insta-aligned", "insta-format", "hybrid",
                            "all", "random", "roe", "lexical", "dsir", "prior-transfer", "popular-source"}


def test_allocate_budget_keeps_the_total():
    from insta.mixture import allocate_budget

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
    from insta.methods import Selector

    enc = TableEncoder({"target": [1, 0, 0], "near": [0.9, 0.1, 0], "mid": [0.6, 0.8, 0], "far": [0.1, 0.2, 0.97]})
    monkeypatch.setitem(insta_encoder._ENCODERS, "table", enc)
    pool = Catalog("toy", [Task(id="a_far", instructions=["far"], catalog="toy"),
                           Task(id="b_mid", instructions=["mid"], catalog="toy"),
                           Task(id="c_near", instructions=["near"], catalog="toy")])
    target = Task(id="T", instructions=["target"], catalog="toy")
    res = load_method("insta-topk-vote", encoder="table", vote_depth=1).select(target, pool, 3)
    assert res.task_ids == ["c_near", "b_mid", "a_far"]
    assert [r.score for r in res.selected][1:] == [0.0, 0.0]
    assert res.selected[1].why["mean_cosine"] > res.selected[2].why["mean_cosine"]
    direct = Selector(pool, enc, "topk-vote", vote_depth=1).select(["target"], 3)
    assert direct.task_ids == res.task_ids


# ---------------------------------------------------------------- one interface, stable cache keys (issue #11)


def test_describe_of_the_existing_methods_is_unchanged():
    """The experiment keys its cached selections by describe(): the methods of the committed experiment keep
    the keys they had before the interface was unified."""
    expected = [
        ("insta-mean", {}, {"aggregation": "mean", "encoder": "all-MiniLM-L6-v2"}),
        ("insta-mean", {"aggregation": "max", "encoder": "hashing"}, {"aggregation": "max", "encoder": "hashing"}),
        ("insta-topk-vote", {}, {"aggregation": "topk-vote", "encoder": "all-MiniLM-L6-v2", "vote_depth": 10}),
        ("all", {}, {}),
        ("random", {"seed": 2}, {"seed": 2}),
        ("roe", {"library_size": 50}, {"encoder": "all-MiniLM-L6-v2", "library_seed": 0, "library_size": 50,
                                       "text": "Answer Choices: ..., Instance: ..."}),
        ("lexical", {}, {"b": 0.75, "documents": "task instructions", "k1": 1.5, "scorer": "BM25Okapi (rank-bm25)"}),
        ("dsir", {"library_size": 50}, {"aggregation": "per-ngram", "featurizer": "data-selection", "library_seed": 0,
                                        "library_size": 50, "ngrams": 2, "num_buckets": 10000,
                                        "text": "instance input (with its answer options)"}),
    ]
    for name, opts, params in expected:
        d = load_method(name, **opts).describe()
        assert d["method"] == name and d["params"] == params, name
        assert set(d) == {"method", "label", "consumes", "depends_on_target", "params"}


def test_load_method_k_option_and_k_rules(catalogs):
    from insta.methods import load_method

    bigbench, _ = catalogs
    target = bigbench.get("animal_facts")
    m = load_method("insta-mean", encoder="hashing", k="gap")
    res = m.select(target, bigbench)
    assert res.k_choice["rule"] == "gap" and res.k_choice["k"] == len(res.selected) >= 1
    assert m.describe()["params"]["k"]["rule"] == "gap"
    assert load_method("insta-mean", encoder="hashing", k=2).select(target, bigbench).k_choice == {"rule": "fixed",
                                                                                                   "k": 2}
    with pytest.raises(InstaError, match="does not score by relevance"):
        load_method("random").select(target, bigbench, "gap")
    with pytest.raises(InstaError, match="k must be"):
        load_method("lexical", k=0)


def test_all_and_random_order_and_ties(catalogs):
    bigbench, _ = catalogs
    res = load_method("all").select(bigbench.get("animal_facts"), bigbench)
    assert res.k_choice["rule"] == "all" and res.ties == []
    assert {s.tie_group for s in res.selected} == {1}  # nothing tells them apart (scored as ties downstream)


def _brute_force_roe(q, emb, owner, n_tasks, allowed):
    """The pre-vectorisation RoE: a loop over tasks on the candidates' columns."""
    cols_ok = allowed[owner]
    sim = q @ emb[cols_ok].T
    own = owner[cols_ok]
    votes = np.bincount(own[np.argmax(sim, axis=1)], minlength=n_tasks).astype(float)
    best = np.full((len(q), n_tasks), -np.inf)
    for t in range(n_tasks):
        if (own == t).any():
            best[:, t] = sim[:, own == t].max(axis=1)
    return votes, np.where(np.isfinite(best), best, -1.0).mean(axis=0)


def test_roe_vectorised_retrieval_equals_the_loop_in_chunks_and_with_exclusions(monkeypatch):
    import insta.methods as m

    rng = np.random.default_rng(1)
    n_tasks, per = 7, 5
    emb = rng.standard_normal((n_tasks * per, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    owner = np.repeat(np.arange(n_tasks), per)
    owner[-per:] = n_tasks - 2  # the last task has no instances
    q = rng.standard_normal((6, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    pool = Catalog("toy", [Task(id=f"t{i}", instructions=["x"], catalog="toy") for i in range(n_tasks)])
    index = m.InstanceIndex("stub", chunk=4)  # chunks smaller than a task: maxima across chunk borders
    index._cache.put(pool, (owner, emb))

    class Stub:
        def encode(self, texts):
            return q[: len(texts)]

        def describe(self):
            return {"name": "stub"}

    monkeypatch.setitem(insta_encoder._ENCODERS, "stub", Stub())
    samples = [Example(id=str(i), input=str(i), references=[]) for i in range(6)]
    for allowed in (np.ones(n_tasks, dtype=bool), np.array([True, False, True, True, False, True, True])):
        votes, mean_best = index.query(pool, samples, allowed)
        ref_votes, ref_best = _brute_force_roe(q, emb, owner, n_tasks, allowed)
        assert votes.tolist() == ref_votes.tolist()
        assert np.allclose(mean_best[allowed], ref_best[allowed], atol=1e-6)
        assert votes[~allowed].sum() == 0


def test_roe_excluded_task_cannot_take_a_vote(monkeypatch):

    enc = TableEncoder({"alpha": [1, 0, 0], "beta": [0.8, 0.6, 0], "gamma": [0, 0, 1], "q": [1, 0.01, 0]})
    monkeypatch.setitem(insta_encoder._ENCODERS, "table", enc)
    pool = Catalog("toy", [_task("A", ["alpha one"]), _task("B", ["beta one"]), _task("C", ["gamma one"])])
    target = Task(id="T", instructions=["x"], catalog="toy")
    samples = [Example(id="s", input="q", references=[])]
    free = load_method("roe", encoder="table").select(target, pool, 2, target_samples=samples)
    guarded = load_method("roe", encoder="table").select(target, pool, 2, target_samples=samples, exclude=["A"])
    assert free.task_ids[0] == "A" and guarded.task_ids[0] == "B"
    assert guarded.selected[0].why["votes"] == 1


def _dense_dsir_reference(lib_texts, owner, target_texts, n_tasks, buckets):
    """The pre-sparse DSIR computation (dense texts x buckets), per-ngram aggregation."""
    feats = np.stack([ngram_counts_builtin(t, 2, buckets) for t in lib_texts]).astype(np.float64)
    tfeat = np.stack([ngram_counts_builtin(t, 2, buckets) for t in target_texts]).sum(axis=0).astype(np.float64)
    raw = feats.sum(axis=0)
    log_diff = np.log(tfeat / tfeat.sum() + 1e-8) - np.log(raw / raw.sum() + 1e-8)
    w = feats @ log_diff
    sums = np.bincount(owner, weights=w, minlength=n_tasks)
    ngrams = np.bincount(owner, weights=feats.sum(axis=1), minlength=n_tasks)
    return np.where(ngrams > 0, sums / np.maximum(ngrams, 1), -np.inf)


def test_dsir_sparse_features_equal_the_dense_counts_and_scores():
    from insta.methods import ngram_features

    texts = ["What is two plus three?", "Name the capital of France.", "", "what is what is WHAT, is it?"]
    feats = ngram_features(texts, 2, 64)
    assert feats.shape == (4, 64) and feats.dtype == np.float64
    dense = np.stack([ngram_counts_builtin(t, 2, 64) for t in texts])
    assert (feats.toarray() == dense).all()
    pool = Catalog("toy", [
        _task("colors", ["what color is the sky", "what color is grass", "what color is snow"]),
        _task("sums", ["what is two plus three", "what is four plus one", "what is six plus two"]),
        _task("caps", ["name the capital of france", "name the capital of peru"]),
    ])
    target = Task(id="t", instructions=["x"], catalog="toy")
    samples = [Example(id=f"s{i}", input=x, references=[]) for i, x in
               enumerate(["what is one plus one", "what is nine plus two"])]
    res = load_method("dsir", library_size=10, num_buckets=512).select(target, pool, 3, target_samples=samples)
    lib = [(i, ex.input) for i, t in enumerate(pool) for ex in t.iter_examples()]
    ref = _dense_dsir_reference([x for _, x in lib], np.array([i for i, _ in lib]), [s.input for s in samples], 3, 512)
    got = {s.task: s.score for s in res.selected}
    assert got == {tid: pytest.approx(ref[i], rel=1e-9) for i, tid in enumerate(pool.ids)}


def test_lexical_statistics_come_from_the_candidates_only():
    """An excluded task is not a BM25 document: the scores equal those of a pool that never held it."""
    pool = Catalog("toy", [
        Task(id="plants", instructions=["Decide whether statements about plants are true or false."], catalog="toy"),
        Task(id="movies", instructions=["Classify the sentiment of a movie review."], catalog="toy"),
        Task(id="maths", instructions=["Add two numbers."], catalog="toy"),
        Task(id="plants2", instructions=["Are statements about plants true?"], catalog="toy"),
    ])
    target = Task(id="t", instructions=["Are these statements about plants true?"], catalog="toy")
    guarded = load_method("lexical").select(target, pool, 2, exclude=["plants2"])
    never = load_method("lexical").select(target, Catalog("toy", list(pool)[:3]), 2)
    with_it = load_method("lexical").select(target, pool, 4)  # plants2 shares the rare words: their idf drops
    assert {s.task: s.score for s in with_it.selected}["plants"] < guarded.selected[0].score
    assert [(s.task, s.score) for s in guarded.selected] == [(s.task, s.score) for s in never.selected]
    assert "plants" in guarded.selected[0].why["shared_words"]


def test_hybrid_weight_zero_is_insta_and_one_is_the_instance_signal(monkeypatch):

    enc = TableEncoder({"instr A": [1, 0, 0], "instr B": [0.6, 0.8, 0], "instr C": [0, 0.6, 0.8],
                        "target": [0.95, 0.3, 0.0],
                        "alpha": [0, 0, 1], "beta": [0, 1, 0], "gamma": [1, 0, 0], "qq": [0.99, 0.1, 0.05]})
    monkeypatch.setitem(insta_encoder._ENCODERS, "table", enc)

    def task(tid, instr, inputs):
        exs = [Example(id=f"{tid}:{i}", input=x, references=["a"]) for i, x in enumerate(inputs)]
        return Task(id=tid, instructions=[instr], catalog="toy", loader=lambda: iter(exs))

    pool = Catalog("toy", [task("A", "instr A", ["alpha 1"]), task("B", "instr B", ["beta 1"]),
                           task("C", "instr C", ["gamma 1"])])
    target = Task(id="T", instructions=["target"], catalog="toy")
    samples = [Example(id="s", input="qq", references=[])]
    insta = load_method("insta-mean", encoder="table").select(target, pool, 3).task_ids
    assert insta == ["A", "B", "C"]
    assert load_method("hybrid", encoder="table", weight=0.0).select(target, pool, 3, target_samples=samples
                                                                    ).task_ids == insta
    by_inputs = load_method("hybrid", encoder="table", weight=1.0).select(target, pool, 3, target_samples=samples)
    assert by_inputs.task_ids == ["C", "B", "A"]  # the target input is nearest to C's instance, then B's
    mid = load_method("hybrid", encoder="table", weight=0.5).select(target, pool, 3, target_samples=samples)
    why = mid.selected[0].why
    assert mid.selected[0].score == pytest.approx(0.5 * why["z_instruction"] + 0.5 * why["z_instance"], abs=2e-3)
    assert {"best_source_instruction", "instance_score"} <= set(why)
    with pytest.raises(InstaError, match="weight"):
        load_method("hybrid", weight=1.5)


def test_insta_format_ranks_the_task_with_the_target_output_space_first():
    """Plain INSTA (bag-of-words encoder) prefers the task whose instruction shares words with the target's; the
    format-aware text adds the output space, and the task with the target's yes/no answers wins."""
    def task(tid, instr, options):
        exs = [Example(id=f"{tid}:{i}", input=f"{tid} input {i}", references=[options[0]] if options else ["a b c d"],
                       options=options, label=0 if options else None) for i in range(3)]
        return Task(id=tid, instructions=[instr], catalog="toy", loader=lambda: iter(exs))

    pool = Catalog("toy", [task("wordy", "Read the passage and answer the question.", None),
                           task("yesno", "Decide about the passage.", ["yes", "no"])])
    target = task("target", "Read the passage and answer.", ["yes", "no"])
    plain = load_method("insta-mean", encoder="hashing").select(target, pool, 2)
    fmt = load_method("insta-format", encoder="hashing").select(target, pool, 2)
    assert plain.task_ids == ["wordy", "yesno"] and fmt.task_ids == ["yesno", "wordy"]
    assert fmt.selected[0].why["best_source_instruction"].endswith("Answer options: no | yes.")
    assert fmt.config["format_aware"] == "instructions with their output space"
    free = load_method("insta-format", encoder="hashing").select(["Read the passage and answer."], pool, 2)
    assert free.task_ids == plain.task_ids and "unknown" in free.config["format_aware"]


def test_output_space_weight_adds_the_answer_format_as_a_separate_signal():
    """With weight 0 the ranking is plain INSTA's; with weight w every score is the instruction score plus w x the
    cosine of the output spaces, so the task answering like the target (yes/no) moves up; a source without a
    known output space gets the neutral mean; a target without one is ranked on instructions alone."""
    def task(tid, instr, options, refs=None):
        exs = [Example(id=f"{tid}:{i}", input=f"{tid} input {i}", references=refs or [options[0]],
                       options=options, label=0 if options else None) for i in range(3)]
        return Task(id=tid, instructions=[instr], catalog="toy", loader=lambda: iter(exs))

    pool = Catalog("toy", [task("wordy", "Read the passage and answer the question.", ["true", "false", "maybe"]),
                           task("yesno", "Decide about the passage.", ["yes", "no"]),
                           task("free", "Write about the passage.", None, refs=["a long free text answer here"]),
                           Task(id="blank", instructions=["Passage task."], catalog="toy", loader=lambda: iter([]))])
    target = task("target", "Read the passage and answer.", ["yes", "no"])
    plain = load_method("insta-mean", encoder="hashing").select(target, pool, 4)
    zero = load_method("insta-mean", encoder="hashing", output_space_weight=0).select(target, pool, 4)
    assert zero.task_ids == plain.task_ids and plain.task_ids[0] == "wordy"
    spaced = load_method("insta-mean", encoder="hashing", output_space_weight=1.0).select(target, pool, 4)
    assert spaced.task_ids[0] == "yesno"
    assert spaced.config["output_space"] == "Answer options: no | yes."
    by_id = {s.task: s for s in spaced.selected}
    assert by_id["yesno"].why["output_space_cosine"] == pytest.approx(1.0, abs=1e-4)
    for s in spaced.selected:
        assert s.score == pytest.approx(s.why["instruction_score"] + s.why["output_space_cosine"], abs=1e-4)
    known = [by_id[t].why["output_space_cosine"] for t in ("wordy", "yesno", "free")]
    assert by_id["blank"].why["output_space"] is None
    assert by_id["blank"].why["output_space_cosine"] == pytest.approx(sum(known) / 3, abs=1e-4)
    unknown = load_method("insta-mean", encoder="hashing", output_space_weight=1.0).select(
        ["Read the passage and answer."], pool, 3)
    assert unknown.task_ids == load_method("insta-mean", encoder="hashing").select(
        ["Read the passage and answer."], pool, 3).task_ids and "unknown" in unknown.config["output_space"]
    with pytest.raises(InstaError, match="output_space_weight"):
        load_method("insta-mean", output_space_weight=-1)


def test_per_pool_caches_never_serve_another_pool():
    """Caches hold their pool by weak reference: a new pool object (even with the same task ids) is computed
    afresh, so no id() reuse can hand it another pool's library."""
    from insta.methods.resources import PoolCache

    cache = PoolCache()
    a = Catalog("toy", [Task(id="t", instructions=["x"], catalog="toy")])
    b = Catalog("toy", [Task(id="t", instructions=["x"], catalog="toy")])
    assert cache.get(a, lambda: "for a") == "for a"
    assert cache.get(a, lambda: "again") == "for a"
    assert cache.get(b, lambda: "for b") == "for b"
    assert cache.get(a, lambda: "a afresh") == "a afresh"  # one pool is kept at a time
    assert cache.get(a, lambda: "other key", key=1) == "other key" and cache.get(a, lambda: "?") == "a afresh"
    import pickle

    copy = pickle.loads(pickle.dumps(cache))  # methods travel to other processes (Ray): the cache goes empty
    assert copy.get(a, lambda: "rebuilt") == "rebuilt"
    method = load_method("insta-mean", encoder="hashing")
    method.select(["x"], a, 1)
    assert pickle.loads(pickle.dumps(method)).select(["x"], a, 1).task_ids == ["t"]
