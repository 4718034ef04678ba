"""Catalog readers on the real upstream data (``$INSTA_DATA_DIR``, else ``../shared/data``).

Marked slow. The data is required: a missing data folder fails these tests rather than skipping them.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from insta.catalogs import bbh, bigbench, niv2, p3, p3_templates
from insta.errors import InstaError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = Path(os.environ.get("INSTA_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (path / "promptsource").is_dir() or not (path / "big-bench").is_dir() or not (path / "bbh").is_dir():
        pytest.fail(f"real data not found at {path}: set INSTA_DATA_DIR to the shared data folder")
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("index-cache")


@pytest.fixture(autouse=True)
def _cache_env(cache_dir, monkeypatch):
    monkeypatch.setenv("INSTA_CACHE_DIR", str(cache_dir))


@pytest.fixture(scope="module")
def p3_cat(data_dir):
    return p3.load(data_dir, cache=False)


@pytest.fixture(scope="module")
def bb_cat(data_dir):
    return bigbench.load(data_dir, cache=False)


# ---------------------------------------------------------------- P3


def test_p3_sizes_and_t0_names(p3_cat):
    assert len(p3_cat) == 211
    assert p3_cat.n_instructions() > 1500
    for name in p3.T0_TRAIN + p3.T0_EVAL:
        assert p3.t0_task_id(name) in p3_cat.ids, name
    assert len(set(p3.T0_TRAIN)) == 35 and len(set(p3.T0_EVAL)) == 11
    train, evals = p3_cat.pool("t0_train"), p3_cat.pool("t0_eval")
    assert len(train) == 35
    assert sorted(evals) == sorted({p3.t0_task_id(n) for n in p3.T0_EVAL})  # the ANLI rounds share one task
    assert not set(train) & set(evals)
    assert p3_cat.resolve("qqp") == "glue/qqp" and p3_cat.resolve("wsc") == "super_glue/wsc.fixed"
    assert p3_cat["yelp_review_full"].category == "sentiment"
    assert p3_cat["super_glue/rte"].category == "nli" and p3_cat["winogrande"].category == "coreference"
    assert p3_cat["kilt_tasks/hotpotqa"].category == "closed_book_qa"
    assert "hotpot_qa" in p3_cat and not p3_cat["hotpot_qa"].pools  # the plain folder is its own task


def test_p3_grouping(p3_cat):
    adv = p3_cat["adversarial_qa"]
    assert adv.meta["sources"] == ["adversarial_qa/adversarialQA", "adversarial_qa/dbert", "adversarial_qa/dbidaf",
                                   "adversarial_qa/droberta"]
    assert len(adv.meta["templates"]) == 20 and len(adv.instructions) == 5  # same 5 templates in 4 subsets
    for grouped in ("duorc", "paws", "winogrande", "wiki_hop", "cos_e"):
        assert grouped in p3_cat and len(p3_cat[grouped].meta["sources"]) > 1, grouped
    for collection in ("glue/qqp", "super_glue/rte", "kilt_tasks/hotpotqa", "tweet_eval/emoji", "Zaid/coqa_expanded",
                       "craffel/openai_lambada"):
        assert collection in p3_cat.ids, collection
    assert "glue" not in p3_cat.ids and "super_glue" not in p3_cat.ids


def test_p3_instructions_are_clean(p3_cat):
    for task in p3_cat:
        assert task.instructions, task.id
        for ins in task.instructions:
            assert ins and "{{" not in ins and "{%" not in ins and "|||" not in ins, (task.id, ins)
            assert ins == " ".join(ins.split())
    rte = p3_cat["super_glue/rte"].instructions
    assert any(i.startswith('[premise] Using only the above description and what you know about the world, is '
                            '"[hypothesis]" definitely correct? Yes or no?') for i in rte)


def test_p3_rte_and_wsc_render_with_every_template(p3_cat):
    for task_id, n_rows in (("super_glue/rte", 277), ("super_glue/wsc.fixed", 104)):
        task = p3_cat[task_id]
        exs = task.examples()
        per_template = Counter(e.provenance["template_id"] for e in exs)
        assert set(per_template) == {t["id"] for t in task.meta["templates"]}
        assert set(per_template.values()) == {n_rows}, task_id
        for e in exs:
            assert e.input and e.label is not None and e.options[e.label] == e.references[0]
            assert "{{" not in e.input
    rte = p3_cat["super_glue/rte"].examples()
    labels = Counter(e.target for e in rte if e.provenance["template_name"] == "can we infer")
    assert labels == {"Yes": 146, "No": 131}  # RTE val: 146 entailment, 131 not_entailment


def test_p3_sandbox_renders_like_a_plain_jinja_environment(p3_cat, data_dir, monkeypatch):
    """The sandboxed renderer gives exactly what promptsource's plain Environment gives: on the real RTE and WSC
    rows, and on templates that build lists and dicts (e2e_nlg_cleaned, scan), which Jinja's immutable sandbox
    would refuse."""
    import copy

    from jinja2 import BaseLoader, Environment

    tdir = data_dir / "promptsource" / "templates"
    rows = {
        "e2e_nlg_cleaned": {"meaning_representation": "name[The Eagle], eatType[coffee shop], food[French], "
                                                      "priceRange[moderate], area[riverside], near[Burger King]",
                            "human_reference": "The Eagle is a French coffee shop by the river."},
        "scan/simple": {"commands": "jump twice and walk left", "actions": "I_JUMP I_JUMP I_TURN_LEFT I_WALK"},
    }

    def render_all():
        out = [(e.input, e.references, e.options) for t in ("super_glue/rte", "super_glue/wsc.fixed")
               for e in p3_cat[t].examples()]
        renderer = p3_templates.Renderer()
        for rel, row in rows.items():
            for tpl in p3_templates.parse_file(tdir / rel / "templates.yaml"):
                out.append(renderer.apply(tpl, copy.deepcopy(row), tpl["id"]))
        return out

    sandboxed = render_all()
    assert len(sandboxed) == 3810 + 12 + 11  # RTE and WSC examples, then 12 e2e and 11 scan templates
    monkeypatch.setattr(p3_templates, "_sandbox_env", lambda: Environment(loader=BaseLoader()))
    assert render_all() == sandboxed


# ---------------------------------------------------------------- BIG-bench


def test_bigbench_sizes_and_t0_targets(bb_cat):
    assert len(bb_cat) == 1001  # 1,041 task.json files, 40 of them parents without examples
    assert bb_cat.n_instructions() > 1001
    for name in bigbench.T0_EVAL:
        target = bigbench.ALIASES.get(name, name)
        assert target in bb_cat.ids or bb_cat.members(target), name
    assert bb_cat.resolve("syllogisms") == "formal_fallacies_syllogisms_negation"
    assert len(bb_cat.members("conceptual_combinations")) == 6
    assert bb_cat.members("logical_deduction") == ["logical_deduction/five_objects", "logical_deduction/seven_objects",
                                                   "logical_deduction/three_objects"]
    assert len(bb_cat.pool("t0_eval")) == 12 + 6 + 3
    assert bb_cat["conceptual_combinations/homonyms"].family == "conceptual_combinations"


def test_bigbench_examples(bb_cat):
    cld = bb_cat["code_line_description"].examples()
    assert len(cld) == 60
    assert cld[0].input.startswith("Python code:\nfor i in range(23):")
    assert cld[0].input.endswith("\n\nEnglish language description:") and cld[0].provenance["separator"] == "\n"
    assert cld[0].target == "prints values from 0 to 22"
    positions = Counter(e.label for e in cld)
    assert len(positions) > 1  # the gold option is not always first after shuffling
    sq = bb_cat["strategyqa"].examples(1)[0]
    assert sq.input == "Q: Is it common to see frost during some college commencements?\nA:"
    assert sorted(sq.options) == ["No", "Yes"]


def test_bigbench_warm_load_is_fast(data_dir):
    bigbench.load(data_dir)  # builds (or refreshes) the index
    start = time.perf_counter()
    cat = bigbench.load(data_dir)
    assert time.perf_counter() - start < 1.0
    assert len(cat) == 1001


# ---------------------------------------------------------------- BBH


def test_bbh_real(data_dir):
    cat = bbh.load(data_dir)
    assert len(cat) == 27 and len(cat.pool("eval")) == 23
    bb_folders = {p.name for p in (data_dir / "big-bench").iterdir() if p.is_dir()}
    assert set(bbh.BBH_PARENT) == set(cat.ids)
    missing = {t.family for t in cat} - bb_folders
    assert missing == {"boolean_expressions", "multistep_arithmetic", "web_of_lies"}  # programmatic in BIG-bench
    for task in cat:
        assert task.instructions and all(task.instructions), task.id
    assert cat["snarks"].instructions[-1] == "Which statement is sarcastic?"
    assert cat["formal_fallacies"].family == "formal_fallacies_syllogisms_negation"
    assert [d["index"] for d in cat["movie_recommendation"].meta["dropped"]] == [163]
    assert [d["index"] for d in cat["ruin_names"].meta["dropped"]] == [99, 144]
    assert len(cat["ruin_names"].examples()) == 248
    assert sum(len(t.meta["dropped"]) for t in cat) == 3
    du = cat["date_understanding"].examples(1)[0]
    assert du.options == ["(A)", "(B)", "(C)", "(D)", "(E)", "(F)"] and du.target == "(B)"
    assert du.input.startswith("Q: Today is Christmas Eve of 1937.") and du.input.endswith("(F) 07/25/1937\nA:")
    for task in cat:
        for e in task.examples():
            if e.options is not None:
                assert e.label is not None and e.options[e.label] == e.references[0], (task.id, e.id)
    assert cat["navigate"].examples(1)[0].options == ["No", "Yes"]
    assert cat["word_sorting"].examples(1)[0].options is None


# ---------------------------------------------------------------- NIV2


def test_niv2_real_data_explains_missing_tasks(data_dir):
    assert (data_dir / "natural-instructions" / "splits" / "default" / "train_tasks.txt").is_file()
    if (data_dir / "natural-instructions" / "tasks").is_dir():
        cat = niv2.load(data_dir)
        assert len(cat.pool("test")) > 0
    else:
        with pytest.raises(InstaError, match="git clone https://github.com/allenai/natural-instructions"):
            niv2.load(data_dir)
