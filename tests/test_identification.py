"""Leave-one-instruction-out task identification (``insta eval-selection``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.cli import main
from insta.encoder import HashingEncoder
from insta.errors import InstaError
from insta.evaluators.identification import (
    Query,
    catalog_units,
    evaluate_identification,
    leave_one_out_ranks,
    make_queries,
)
from insta.evaluators.identification_table import format_markdown
from insta.records import Example, Task
from insta.methods import Selector

FIX = Path(__file__).parent / "fixtures" / "align"


@pytest.fixture(scope="module")
def tasks():
    return load_catalog(str(FIX / "tasks.yaml"))


class OracleEncoder:
    """Embeds a text as its unit's one-hot vector plus a little text-specific noise: identification is perfect."""

    def __init__(self, units):
        self.names = list(units)
        self.owner = {t: i for i, u in enumerate(self.names) for t in units[u]}

    def encode(self, texts):
        out = np.zeros((len(texts), len(self.names) + 8), dtype=np.float32)
        for r, t in enumerate(texts):
            out[r, self.owner[t]] = 1.0
            out[r, len(self.names):] = 0.05 * np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(8)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def describe(self):
        return {"name": "oracle"}


class DenseEncoder:
    """Hashed bag of words through a fixed random projection: dense vectors, so no exact ties between scores
    (the vectorised and the reference computation may then only differ by float noise, far below any gap)."""

    def __init__(self):
        self.inner = HashingEncoder(256)
        self.proj = np.random.default_rng(0).standard_normal((256, 48)).astype(np.float32)

    def encode(self, texts):
        v = self.inner.encode(texts) @ self.proj
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def describe(self):
        return {"name": "dense"}


def _rank_via_selector(catalog: Catalog, task_id: str, text: str, encoder, aggregation: str) -> int:
    """The slow reference: remove the text from its task, score with the real Selector, rank with ties against."""
    rebuilt = [Task(t.id, [x for x in t.instructions if not (t.id == task_id and x == text)], t.catalog, family=t.id)
               for t in catalog]
    scores = Selector(Catalog("ref", rebuilt), encoder, aggregation=aggregation).scores([text])
    own = scores[task_id]
    tol = 1e-6 * max(1.0, abs(own))
    return 1 + sum(1 for tid, s in scores.items() if tid != task_id and s >= own - tol)


@pytest.mark.parametrize("aggregation", ["mean", "max", "topk-vote"])
def test_vectorised_ranks_match_the_selector(tasks, aggregation):
    flat = Catalog("flat", [Task(t.id, t.instructions, t.catalog) for t in tasks])  # family = id
    units = catalog_units(flat, "task")
    enc = DenseEncoder()
    queries = [Query(u, t) for u, texts in units.items() if len(texts) >= 2 for t in texts]
    ranks = leave_one_out_ranks(units, enc, queries, [aggregation])[aggregation]
    expected = [_rank_via_selector(flat, q.unit, q.text, enc, aggregation) for q in queries]
    assert ranks.tolist() == expected


def test_oracle_encoder_identifies_everything_and_ranks_are_bounded(tasks):
    units = catalog_units(tasks, "family")
    result = evaluate_identification(tasks, [OracleEncoder(units), HashingEncoder()])
    by = result["groups"]["all"]["by_encoder"]
    for agg in ("mean", "max", "topk-vote"):
        assert by["oracle"][agg]["top1"] == 1.0 and by["oracle"][agg]["mrr"] == 1.0
        assert 0.0 <= by["hashing-512"][agg]["top1"] <= by["hashing-512"][agg]["top5"] <= 1.0
    # every instruction of a unit with >= 2 instructions is a query
    assert result["n_queries"] == sum(len(v) for v in units.values() if len(v) >= 2)
    assert result["n_units"] == len(units) == 10  # coref/a + coref/b are one family


def test_task_unit_separates_subtasks(tasks):
    fam = evaluate_identification(tasks, [HashingEncoder()], unit="family")
    task = evaluate_identification(tasks, [HashingEncoder()], unit="task")
    assert task["n_units"] == fam["n_units"] + 1


class FixedEncoder:
    """Each known text -> a fixed unit vector."""

    def __init__(self, table):
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts])

    def describe(self):
        return {"name": "fixed"}


def test_ambiguous_queries_count_by_default_and_the_unambiguous_view_is_a_second_figure():
    """A query whose text is also another unit's instruction is asked (tied with that unit, or beaten by its
    copy there: a miss); the summary's 'unambiguous' part leaves it out; drop_ambiguous gives the filtered set."""
    enc = FixedEncoder({
        "shared": [1, 0, 0, 0, 0],
        "alpha one": [0.8, 0.6, 0, 0, 0], "alpha two": [0.8, 0.59, 0.05, 0, 0],
        "beta two": [0.8, 0, 0.6, 0, 0], "beta three": [0.8, 0.05, 0.59, 0, 0],
        "gamma three": [0, 0, 0, 1, 0], "delta four": [0, 0, 0, 0.99, 0.1],
    })
    cat = Catalog("c", [Task("a", ["shared", "alpha one", "alpha two"], "c"),
                        Task("b", ["shared", "beta two", "beta three"], "c"),
                        Task("c", ["gamma three", "delta four"], "c")])
    units = catalog_units(cat)
    queries, counts = make_queries(cat, units)
    assert len(queries) == 8 and counts["n_ambiguous"] == 2 and counts["n_ambiguous_dropped"] == 0
    assert {q.text for q in queries if q.ambiguous} == {"shared"}
    kept, counts = make_queries(cat, units, drop_ambiguous=True)
    assert counts["n_ambiguous_dropped"] == 2 and len(kept) == 6
    result = evaluate_identification(cat, [enc])
    assert result["n_queries"] == 8 and result["n_ambiguous"] == 2
    for agg in ("mean", "max", "topk-vote"):
        s = result["groups"]["all"]["by_encoder"]["fixed"][agg]
        assert s["top1"] == pytest.approx(6 / 8), agg  # both "shared" queries miss: the other unit holds the text
        assert s["unambiguous"]["top1"] == 1.0 and s["unambiguous"]["n_queries"] == 6
    md = format_markdown(result)
    assert "fixed top-1 unambiguous" in md.splitlines()[0] and "2 ambiguous" in md
    filtered = evaluate_identification(cat, [enc], drop_ambiguous=True)
    assert filtered["n_queries"] == 6 and filtered["groups"]["all"]["by_encoder"]["fixed"]["max"]["top1"] == 1.0


def test_queries_exclude_what_alignment_saw_and_are_grouped(tasks):
    from insta.align import AlignConfig, split_catalog

    split = split_catalog(tasks, AlignConfig(heldout_fraction=0.34, dev_fraction=0.2)).to_dict()
    meta = {"split": split}
    units = catalog_units(tasks)
    queries, counts = make_queries(tasks, units, [meta])
    seen = {t for d in (split["train"], split["dev"]) for v in d.values() for t in v}
    assert seen and not seen & {q.text for q in queries}
    assert counts["n_seen_dropped"] == len(seen)
    groups = {q.group for q in queries}
    assert groups == {"heldout", "excluded"}
    assert {q.unit for q in queries if q.group == "excluded"} == {"nli_eval"}
    held = {(u, t) for u, v in split["heldout"].items() for t in v}
    assert {(q.unit, q.text) for q in queries if q.group == "heldout"} == held
    # an alignment on another catalog: nothing of this one was trained on -> all unseen
    other = dict(split, catalog="elsewhere", train={"x": ["unrelated"]}, dev={})
    queries, _ = make_queries(tasks, units, [{"split": other}])
    assert {q.group for q in queries} == {"unseen"}


def test_errors_for_unusable_catalogs():
    single = load_catalog(str(FIX / "single.yaml"))
    with pytest.raises(InstaError, match="two or more"):
        evaluate_identification(single, [HashingEncoder()])
    with pytest.raises(InstaError, match="no tasks"):
        evaluate_identification(Catalog("empty", []), [HashingEncoder()])
    with pytest.raises(InstaError, match="aggregation"):
        leave_one_out_ranks({"a": ["x", "y"]}, HashingEncoder(), [Query("a", "x")], ["median"])


def test_markdown_table(tasks):
    result = evaluate_identification(tasks, [HashingEncoder()], aggregations=["mean", "max"])
    md = format_markdown(result)
    lines = md.splitlines()
    assert lines[0].startswith("| group") and "hashing-512 top-1" in lines[0]
    assert len(lines) == 2 + 2  # header, rule, one row per aggregation of the "all" group


def test_cli_eval_selection(tmp_path, capsys, tasks):
    from _tiny_encoder import make_tiny_encoder

    enc = make_tiny_encoder(tmp_path / "enc", [x for t in tasks for x in t.instructions])
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    rc = main(["eval-selection", "-c", str(FIX / "tasks.yaml"), "-e", str(enc), "-a", "mean", "--top", "1",
               "--top", "3", "--json", str(out), "--markdown", str(md), "--details"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["aggregations"] == ["mean"]
    assert set(result["groups"]["all"]["by_encoder"][str(enc)]["mean"]) >= {"top1", "top3", "macro_top1", "mrr"}
    assert len(result["queries"]) == result["n_queries"]
    assert "top-3" in md.read_text()
    assert "task identification" in capsys.readouterr().out
    rc = main(["eval-selection", "-c", str(FIX / "single.yaml"), "-e", str(enc)])
    assert rc == 2 and "two or more" in capsys.readouterr().err


def _twins_catalog() -> Catalog:
    """Two tasks with word-for-word the same instructions but different answer formats (yes/no vs true/false),
    and a free-text task: plain instructions cannot tell the twins apart, their output spaces can."""
    def task(tid, options):
        exs = [Example(str(i), f"x{i}", [options[0]], list(options), 0) for i in range(4)]
        return Task(id=tid, instructions=["Answer.", "Reply."],
                    catalog="toy", loader=lambda: iter(exs))

    free = [Example(str(i), f"x{i}", ["a long free text answer of many words"]) for i in range(4)]
    return Catalog("toy", [task("yesno", ("yes it is", "no it is not")),
                           task("truefalse", ("correct statement", "wrong statement")),
                           Task(id="summary",
                                instructions=["Summarise the article in few words.", "Summarise the article briefly."],
                                catalog="toy", loader=lambda: iter(free))])


def test_format_aware_and_output_space_identification_tell_twins_apart():
    cat = _twins_catalog()
    enc = HashingEncoder()
    plain = evaluate_identification(cat, [enc], unit="task", aggregations=["mean"])
    fmt = evaluate_identification(cat, [enc], unit="task", aggregations=["mean"], format_aware=True)
    space = evaluate_identification(cat, [enc], unit="task", aggregations=["mean"], output_space_weight=1.0)
    zero = evaluate_identification(cat, [enc], unit="task", aggregations=["mean"], output_space_weight=0.0)

    def top1(res, g="all"):
        (by_encoder,) = res["groups"][g]["by_encoder"].values()
        return by_encoder["mean"]["top1"]

    # the twins' 4 queries are ambiguous: plain instructions tie them (a miss); the summary's 2 are found
    assert plain["n_queries"] == fmt["n_queries"] == space["n_queries"] == 6
    assert plain["n_ambiguous"] == 4 and fmt["n_ambiguous"] == 4  # decided on the plain texts either way
    assert top1(plain) == pytest.approx(2 / 6)
    assert top1(fmt) == 1.0 and top1(space) == 1.0
    assert zero["groups"] == plain["groups"]
    assert fmt["format_aware"] is True and space["output_space_weight"] == 1.0


def test_output_space_weight_must_be_a_non_negative_number():
    with pytest.raises(InstaError, match="output_space_weight"):
        evaluate_identification(_twins_catalog(), [HashingEncoder()], output_space_weight=-1)


def test_cli_format_aware_identification(tmp_path, monkeypatch):
    import insta.commands._common as common

    monkeypatch.setattr(common, "load_pool", lambda args: _twins_catalog())
    out = tmp_path / "id.json"
    rc = main(["eval-selection", "-c", "toy", "-e", "hashing", "--unit", "task", "--format-aware",
               "--output-space-weight", "0.5", "--json", str(out), "-q"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["format_aware"] is True and res["output_space_weight"] == 0.5
    (by_encoder,) = res["groups"]["all"]["by_encoder"].values()
    assert by_encoder["mean"]["top1"] == 1.0


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_any_method_path_agrees_with_the_vectorised_ranks(tasks, aggregation):
    from insta.evaluators.identification import method_leave_one_out_ranks
    from insta.methods import load_method

    flat = Catalog("flat", [Task(t.id, t.instructions, t.catalog) for t in tasks])
    units = catalog_units(flat, "task")
    queries, _ = make_queries(flat, units, unit="task")
    enc = DenseEncoder()
    fast = leave_one_out_ranks(units, enc, queries, [aggregation])[aggregation]
    slow = method_leave_one_out_ranks(load_method("insta-mean", encoder=enc, aggregation=aggregation), units, queries)
    assert len(queries) > 5 and list(slow) == list(fast)


def test_lexical_identification_counts_ties_against_and_refuses_sample_methods():
    from insta.evaluators.identification import method_leave_one_out_ranks
    from insta.methods import load_method

    cat = _twins_catalog()
    res = evaluate_identification(cat, [], unit="task", aggregations=["mean"], methods=[load_method("lexical")])
    # the twins' texts are word for word the same: BM25 ties them (4 misses); the summary's 2 queries are found
    assert res["groups"]["all"]["by_encoder"]["lexical"]["mean"]["top1"] == pytest.approx(2 / 6)
    units = catalog_units(cat, "task")
    queries, _ = make_queries(cat, units, unit="task")
    with pytest.raises(InstaError, match="instructions only"):
        method_leave_one_out_ranks(load_method("roe", encoder="hashing"), units, queries)


def test_cli_identification_with_a_method_column(tmp_path, monkeypatch):
    import insta.commands._common as common

    monkeypatch.setattr(common, "load_pool", lambda args: _twins_catalog())
    out = tmp_path / "id.json"
    assert main(["eval-selection", "-c", "toy", "-e", "hashing", "-m", "lexical", "--unit", "task",
                 "--json", str(out), "-q"]) == 0
    res = json.loads(out.read_text())
    assert [e["label"] for e in res["encoders"]] == ["hashing", "lexical"]
    assert main(["eval-selection", "-c", "toy", "-m", "no-such-method", "-q"]) != 0
