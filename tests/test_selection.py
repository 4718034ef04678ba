"""Selection logic with a tiny deterministic encoder: aggregation, ties, exclusion, errors."""
import json

import numpy as np
import pytest

from insta.catalogs.base import Catalog
from insta.encoder import HashingEncoder
from insta.errors import InstaError
from insta.records import Task
from insta.methods import Selector, select
from insta.selection import topk_vote_weights


class TableEncoder:
    """Maps each known text to a fixed unit vector, so cosines are known exactly."""

    def __init__(self, table):
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return np.stack([self.table[t] for t in texts])

    def describe(self):
        return {"name": "table", "path": None, "key": "table"}


def _task(tid, instructions, family=""):
    return Task(id=tid, instructions=instructions, catalog="toy", family=family)


@pytest.fixture
def toy():
    enc = TableEncoder({
        "q": [1, 0, 0],
        "q2": [0, 1, 0],
        "a1": [1, 0, 0], "a2": [0, 0, 1],       # A: mean .5 vs q, max 1
        "b1": [0.9, 0.1, 0], "b2": [0.9, 0.1, 0],  # B: mean ~.99, max ~.99
        "c1": [0, 1, 0],                        # C: 0 vs q
        "d1": [0, 1, 0],                        # D: identical to C (a tie)
    })
    cat = Catalog("toy", [
        _task("A", ["a1", "a2"]), _task("B", ["b1", "b2"], family="fam"), _task("C", ["c1"]), _task("D", ["d1"]),
    ])
    return cat, enc


def test_mean_and_max_aggregations_rank_differently(toy):
    cat, enc = toy
    mean = Selector(cat, enc, "mean").select(["q"], k=2)
    mx = Selector(cat, enc, "max").select(["q"], k=2)
    assert mean.task_ids == ["B", "A"]
    assert mx.task_ids == ["A", "B"]
    assert mean.selected[1].score == pytest.approx(0.5)
    assert mx.selected[0].score == pytest.approx(1.0)


def test_explanation_names_the_best_pair(toy):
    cat, enc = toy
    res = Selector(cat, enc, "mean").select(["q", "q2"], k=4)
    by = {s.task: s for s in res.selected}
    assert by["A"].best_source_instruction == "a1" and by["A"].best_target_instruction == "q"
    assert by["C"].best_target_instruction == "q2" and by["C"].best_pair_cosine == pytest.approx(1.0)


def test_ties_are_broken_by_task_id(toy):
    cat, enc = toy
    res = Selector(cat, enc, "mean").select(["q2"], k=4)
    c_rank = res.task_ids.index("C")
    assert res.task_ids[c_rank + 1] == "D"  # C and D tie exactly: alphabetical


def test_exclusion_of_tasks_and_families(toy):
    cat, enc = toy
    sel = Selector(cat, enc, "mean")
    res = sel.select(["q"], k=2, exclude=["A"], exclude_families=["fam"])
    assert "A" not in res.task_ids and "B" not in res.task_ids
    assert set(res.excluded) == {"A", "B"}


def test_k_larger_than_pool_is_an_error(toy):
    cat, enc = toy
    with pytest.raises(InstaError, match="larger than the pool"):
        Selector(cat, enc).select(["q"], k=4, exclude=["A"])
    with pytest.raises(InstaError, match="positive"):
        Selector(cat, enc).select(["q"], k=0)


def test_empty_target_instruction_is_an_error(toy):
    cat, enc = toy
    with pytest.raises(InstaError, match="no instruction"):
        Selector(cat, enc).select(["   ", ""], k=1)


def test_unknown_aggregation_is_an_error(toy):
    cat, enc = toy
    with pytest.raises(InstaError, match="aggregation"):
        Selector(cat, enc, "median")


def test_topk_vote_weights_are_lexicographic():
    w = topk_vote_weights(10, n_queries=4)
    # one rank-1 hit beats four rank-2 hits plus four of every lower rank
    assert w[0] > 4 * w[1:].sum()


def test_topk_vote_prefers_rank_one_hits():
    enc = TableEncoder({
        "q1": [1, 0, 0], "q2": [0, 1, 0],
        "x": [1, 0.01, 0],            # X is the top hit for q1
        "y1": [0.8, 0.7, 0], "y2": [0.7, 0.8, 0],  # Y is second for both queries
        "z": [0, 1, 0.01],            # Z is the top hit for q2
    })
    cat = Catalog("toy", [_task("X", ["x"]), _task("Y", ["y1", "y2"]), _task("Z", ["z"])])
    res = Selector(cat, enc, "topk-vote", vote_depth=2).select(["q1", "q2"], k=3)
    assert res.task_ids[-1] == "Y"  # two rank-2 hits lose to one rank-1 hit
    assert set(res.task_ids[:2]) == {"X", "Z"}


def test_topk_vote_breaks_zero_vote_ties_by_mean_cosine():
    enc = TableEncoder({
        "q": [1, 0, 0],
        "x": [1, 0.01, 0],               # the only voted task
        "a": [0, 0, 1],                  # no vote, cosine 0 with q
        "b": [0.5, 0, 1],                # no vote, cosine > 0 with q: must come before "a"
    })
    cat = Catalog("toy", [_task("X", ["x"]), _task("A", ["a"]), _task("B", ["b"])])
    res = Selector(cat, enc, "topk-vote", vote_depth=1).select(["q"], k=3)
    assert res.task_ids == ["X", "B", "A"]
    assert res.selected[1].score == res.selected[2].score == 0.0


def test_catalog_embedded_once_per_selector(toy):
    cat, enc = toy
    sel = Selector(cat, enc)
    sel.select(["q"], k=1)
    sel.select(["q2"], k=1)
    assert enc.calls == 3  # catalog once + one per target


def test_select_with_a_task_target_excludes_it_and_its_family():
    cat = Catalog("toy", [
        _task("sentiment/imdb", ["Is this movie review positive or negative?"], family="sentiment"),
        _task("sentiment/yelp", ["Is this restaurant review positive or negative?"], family="sentiment"),
        _task("topic", ["What topic is this news article about?"]),
        _task("nli", ["Does the premise entail the hypothesis?"]),
    ])
    res = select(cat, cat.get("sentiment/imdb"), k=2, encoder=HashingEncoder())
    assert not {"sentiment/imdb", "sentiment/yelp"} & set(res.task_ids)
    assert res.target["task"] == "sentiment/imdb"


def test_hashing_encoder_is_deterministic_and_normalised():
    enc = HashingEncoder(64)
    a = enc.encode(["positive or negative review", "summarise the article"])
    b = enc.encode(["positive or negative review", "summarise the article"])
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert a[0] @ a[1] < 0.99


def test_selection_json_carries_config(toy):
    cat, enc = toy
    d = Selector(cat, enc, "max").select(["q"], k=2).to_dict()
    assert d["k"] == 2 and d["config"]["aggregation"] == "max"
    assert [s["task"] for s in d["selected"]] == ["A", "B"]
    assert d["selected"][0]["rank"] == 1


# ---------------------------------------------------------------- fixes found by measurement (issue #11)


def test_topk_vote_excludes_leakage_guard_tasks_before_voting():
    """An excluded task (the target itself, inside the pool) must not take a top-k slot: with vote depth 1 its
    copy of the target's instruction took the only vote, leaving every candidate at 0 (ranked by mean cosine)."""
    enc = TableEncoder({
        "q": [1, 0, 0],
        "self": [1, 0, 0],                       # the target's own task, excluded by the leakage guard
        "a1": [0.9, 0.43, 0], "a2": [0, 0, 1],  # A: the nearest candidate instruction, low mean
        "b1": [0.7, 0.71, 0],                   # B: higher mean cosine, no nearest instruction
    })
    cat = Catalog("toy", [_task("T", ["self"]), _task("A", ["a1", "a2"]), _task("B", ["b1"])])
    res = Selector(cat, enc, "topk-vote", vote_depth=1).select(["q"], k=2, exclude=["T"])
    assert res.task_ids == ["A", "B"]
    assert res.selected[0].score == pytest.approx(1.0) and res.selected[1].score == 0.0
    never_there = Selector(Catalog("toy", list(cat)[1:]), enc, "topk-vote", vote_depth=1).select(["q"], k=2)
    assert [(s.task, s.score) for s in never_there.selected] == [(s.task, s.score) for s in res.selected]


def test_exact_ties_form_a_marked_group_ordered_by_more_instructions_then_id():
    """Tasks the method cannot tell apart (equal score and equal tie-breaker) are one tie group in the result and
    its JSON; within it the task with more distinct instructions comes first (not the alphabetically first)."""
    enc = TableEncoder({
        "q": [1, 0, 0],
        "x": [0.8, 0.6, 0], "x-reworded": [0.8, 0.6, 0],  # two templates that embed alike
        "far": [0, 0, 1],
    })
    cat = Catalog("toy", [_task("a_one_template", ["x"]), _task("b_two_templates", ["x", "x-reworded"]),
                          _task("c_far", ["far"])])
    vote = Selector(cat, enc, "topk-vote", vote_depth=3).select(["q"], k=2)
    assert vote.task_ids == ["b_two_templates", "a_one_template"] and vote.ties == []  # two votes beat one
    for agg in ("mean", "max"):
        res = Selector(cat, enc, agg).select(["q"], k=1)
        assert res.task_ids == ["b_two_templates"], agg
        d = res.to_dict()
        assert d["selected"][0]["tie_group"] == 1
        assert d["ties"] == [{"group": 1, "score": pytest.approx(res.selected[0].score),
                              "tasks": ["b_two_templates", "a_one_template"], "selected": ["b_two_templates"],
                              "order_within": "more distinct instructions, more examples, then task id"}]
        whole = Selector(cat, enc, agg).select(["q"], k=1, ties="include")
        assert whole.task_ids == ["b_two_templates", "a_one_template"]
        assert whole.k_choice["extended_for_tie"] == {"from": 1, "to": 2}
        assert [s.tie_group for s in whole.selected] == [1, 1]


def test_equal_score_split_by_the_secondary_signal_is_not_a_tie():
    """Under max two tasks sharing the best pair have equal scores; the mean cosine ranks them, no tie group."""
    enc = TableEncoder({"q": [1, 0, 0], "best": [1, 0, 0], "near": [0.9, 0.43, 0], "far": [0, 0, 1]})
    cat = Catalog("toy", [_task("A", ["best", "far"]), _task("B", ["best", "near"])])
    res = Selector(cat, enc, "max").select(["q"], k=2)
    assert res.task_ids == ["B", "A"] and res.ties == [] and all(s.tie_group is None for s in res.selected)


def test_selection_json_round_trip_and_earlier_formats(toy):
    from insta.selection import Selection

    cat, enc = toy
    res = Selector(cat, enc, "mean").select(["q"], k=3)
    back = Selection.from_dict(res.to_dict())
    assert back.to_dict() == res.to_dict()
    assert back.selected[0].best_source_instruction == res.selected[0].best_source_instruction
    old_select = {"catalog": "toy", "data_dir": None, "target": {"instructions": ["q"]}, "k": 1, "excluded": [],
                  "selected": [{"rank": 1, "task": "B", "score": 0.99, "best_target_instruction": "q",
                                "best_source_instruction": "b1", "best_pair_cosine": 0.99, "mean_cosine": 0.99,
                                "max_cosine": 0.99}], "config": {"aggregation": "mean"}}
    s = Selection.from_dict(old_select)
    assert s.task_ids == ["B"] and s.selected[0].best_source_instruction == "b1" and s.config["catalog"] == "toy"
    old_method = {"method": "roe", "label": "roe", "target": "bbh:navigate", "consumed": ["target_samples"],
                  "selected": [{"rank": 1, "task": "A", "score": 0.5, "detail": {"votes": 3}}],
                  "params": {"library_size": 50}, "excluded": ["navigate"], "n_pool": 7, "seconds": 0.1}
    m = Selection.from_dict(old_method)
    assert m.target_id == "bbh:navigate" and m.selected[0].why == {"votes": 3} and m.params == {"library_size": 50}


# ---------------------------------------------------------------- the shared aggregation


def test_aggregate_per_row_equals_one_row_at_a_time_and_nan_is_no_pair():
    from insta.selection import aggregate

    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, size=(4, 9))
    sim[1, 3] = np.nan
    owner = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3])
    for agg in ("mean", "max", "topk-vote"):
        rows = aggregate(sim, owner, 5, agg, vote_depth=3, per_row=True)
        assert rows.shape == (4, 5)
        for r in range(4):
            assert np.allclose(rows[r], aggregate(sim[r:r + 1], owner, 5, agg, vote_depth=3)), agg
    mean = aggregate(sim[1:2], owner, 5, "mean")
    assert mean[1] == pytest.approx(np.mean(sim[1, [2, 4]]))  # the NaN pair is not counted
    assert mean[4] == -np.inf  # a task without instructions
    # an unsorted owner gives the same result as the sorted one
    perm = rng.permutation(9)
    for agg in ("mean", "max", "topk-vote"):
        assert np.allclose(aggregate(sim[:, perm], owner[perm], 5, agg, 3, per_row=True),
                           aggregate(sim, owner, 5, agg, 3, per_row=True))


def test_topk_vote_equal_cosines_share_their_ranks_weights():
    """The same text in two tasks: both get the same vote, whatever the catalog order."""
    from insta.selection import aggregate, topk_vote_weights

    sim = np.array([[0.9, 0.9, 0.5]])
    w = topk_vote_weights(2, 1)
    out = aggregate(sim, np.array([0, 1, 2]), 3, "topk-vote", vote_depth=2)
    assert out[0] == out[1] == pytest.approx((w[0] + w[1]) / 2 / w.sum())
    assert out[2] == 0.0


# ---------------------------------------------------------------- k from the scores


def test_k_rules_gap_elbow_threshold_report_the_chosen_k():
    from insta.selection import KRule, choose_k

    scores = [0.9, 0.85, 0.84, 0.5, 0.49, 0.48, 0.47, 0.46, 0.45, 0.44]
    k, why = choose_k(scores, KRule("gap"))
    assert k == 3 and "after rank 3" in why
    k, why = choose_k(scores, KRule("gap", k_max=2))  # bounded: the best drop within ranks 1-2
    assert k == 1 and "within ranks 1-2" in why
    assert choose_k(scores, KRule("elbow"))[0] == 3
    k, why = choose_k(scores, KRule("threshold", z=1.0))
    assert k == 3 and "SD above" in why
    assert choose_k(scores, KRule("threshold", z=1.0, k_min=5))[0] == 5
    with pytest.raises(InstaError, match="unknown k rule"):
        KRule("knee")


def test_select_with_a_k_rule_and_fixed_k(toy):
    from insta.selection import KRule

    enc = TableEncoder({"q": [1, 0, 0], "a": [0.99, 0.14, 0], "b": [0.98, 0.2, 0], "c": [0.1, 0.99, 0],
                        "d": [0.05, 0.99, 0.1], "e": [0, 0.1, 0.99]})
    cat = Catalog("toy", [_task(t, [t.lower()]) for t in "ABCDE"])
    sel = Selector(cat, enc, "mean")
    res = sel.select(["q"], k="gap")
    assert res.task_ids == ["A", "B"] and res.k_choice["rule"] == "gap" and res.k_choice["k"] == 2
    assert "largest score drop" in res.k_choice["why"]
    assert sel.select(["q"], k=KRule("gap", k_min=3)).k_choice["k"] == 3
    assert sel.select(["q"], k=4).k_choice == {"rule": "fixed", "k": 4}
    with pytest.raises(InstaError, match="positive integer or one of"):
        sel.select(["q"], k=0)


# ---------------------------------------------------------------- insta select --method


def _cli(argv, capsys):
    from insta import cli

    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


FIX_DATA = str(__import__("pathlib").Path(__file__).parent / "fixtures" / "experiment" / "data")


@pytest.mark.parametrize("method,extra", [
    ("insta-mean", ["-e", "hashing"]), ("insta-max", ["-e", "hashing"]), ("insta-topk-vote", ["-e", "hashing"]),
    ("insta-format", ["-e", "hashing"]), ("hybrid", ["-e", "hashing", "-o", "weight=0.3", "-o", "library_size=5"]),
    ("lexical", []), ("roe", ["-e", "hashing", "-o", "library_size=5"]),
    ("dsir", ["-o", "library_size=5", "-o", "num_buckets=512"]), ("random", ["-o", "seed=3"]), ("all", []),
])
def test_cli_select_every_method_on_a_task_target(tmp_path, capsys, method, extra):
    out = tmp_path / "sel.json"
    code, stdout, err = _cli(["select", "-c", "bigbench", "--data-dir", FIX_DATA, "--target-catalog", "bbh",
                              "--task", "sports_understanding", "--method", method, "-k", "3", "--json", str(out),
                              *extra], capsys)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["method"] == method and d["consumed"] and d["target"]["task"] == "sports_understanding"
    assert "sports_understanding" in d["excluded"] and "sports_understanding" not in [s["task"] for s in d["selected"]]
    assert len(d["selected"]) == (d["n_pool"] if method == "all" else 3)
    if "target_samples" in d["consumed"]:
        assert d["target"]["n_samples"] > 0  # the target task's own inputs, labels removed
    if method == "hybrid":
        assert d["config"]["params"]["weight"] == 0.3
    assert "top" in stdout and "why" in stdout


def test_cli_select_target_examples_file_k_rule_and_errors(tmp_path, capsys):
    examples = tmp_path / "inputs.jsonl"
    examples.write_text('{"input": "Is a whale a mammal?", "options": ["True", "False"], "answer": "True"}\n'
                        "Plain text line: do frogs have fur?\n")
    out = tmp_path / "sel.json"
    bad, empty, no_input = tmp_path / "bad.jsonl", tmp_path / "empty.jsonl", tmp_path / "no_input.jsonl"
    bad.write_text('{"input": "x",\n')
    empty.write_text("\n  \n")
    no_input.write_text('{"options": ["a", "b"]}\n')
    base = ["select", "-c", "bigbench", "--data-dir", FIX_DATA, "-i", "Decide whether the statement is true."]
    code, _, err = _cli([*base, "-m", "roe", "-e", "hashing", "-o", "library_size=5", "--target-examples",
                         str(examples), "--json", str(out)], capsys)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["target"]["n_samples"] == 2 and d["target"]["instructions"] == ["Decide whether the statement is true."]
    code, stdout, _ = _cli([*base, "-m", "lexical", "-k", "gap", "--k-max", "4", "--json", str(out)], capsys)
    d = json.loads(out.read_text())
    assert code == 0 and d["k_choice"]["rule"] == "gap" and 1 <= d["k"] <= 4 and "k = " in stdout
    for argv, message in ((["-m", "roe", "-e", "hashing"], "needs unlabelled target instances"),
                          (["-m", "insta-man"], "unknown selection method"),
                          (["-m", "lexical", "-o", "depth=3"], "unknown option"),
                          (["-m", "lexical", "-o", "novalue"], "KEY=VALUE"),
                          (["-k", "knee"], "positive integer or one of gap, elbow, threshold"),
                          (["-m", "random", "-k", "gap"], "does not score by relevance"),
                          (["-m", "roe", "--target-examples", str(tmp_path / "none.jsonl")], "does not exist"),
                          (["-m", "roe", "--target-examples", str(bad)], "malformed JSON"),
                          (["-m", "roe", "--target-examples", str(empty)], "holds no example"),
                          (["-m", "roe", "--target-examples", str(no_input)], "non-empty string 'input'"),
                          (["-m", "hybrid", "-e", "hashing", "-o", "weight=2"], "weight must be")):
        code, _, err = _cli([*base, *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_cli_select_marks_tie_groups(tmp_path, capsys):
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n"
                     "  - {id: nli_a, instructions: ['Does the premise entail the hypothesis?']}\n"
                     "  - {id: nli_b, instructions: ['Does the premise entail the hypothesis?']}\n"
                     "  - {id: other, instructions: ['Translate the sentence into French.']}\n")
    out = tmp_path / "sel.json"
    code, stdout, _ = _cli(["select", "-c", str(tasks), "-e", "hashing", "-i", "Does the premise entail it?", "-k",
                            "1", "--json", str(out)], capsys)
    d = json.loads(out.read_text())
    assert code == 0 and d["selected"][0]["tie_group"] == 1 and d["ties"][0]["tasks"] == ["nli_a", "nli_b"]
    assert "tie group =1" in stdout and "nli_b" in stdout
    code, _, _ = _cli(["select", "-c", str(tasks), "-e", "hashing", "-i", "Does the premise entail it?", "-k", "1",
                       "--ties", "include", "--json", str(out)], capsys)
    assert [s["task"] for s in json.loads(out.read_text())["selected"]] == ["nli_a", "nli_b"]
