"""Fast tests of the meta-dataset readers on the hand-written fixtures in tests/fixtures/."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from insta.catalogs import bbh, bigbench, index_cache, load_catalog, niv2, p3, p3_templates, user
from insta.errors import InstaError

FIX = Path(__file__).resolve().parent / "fixtures"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """Every test gets its own index cache folder (never ~/.cache)."""
    monkeypatch.setenv("INSTA_CACHE_DIR", str(tmp_path / "cache"))


# ---------------------------------------------------------------- P3


def test_p3_grouping_collections_and_empty_tasks():
    cat = p3.load(FIX / "p3")
    assert sorted(cat.ids) == ["glue/qqp", "imdb", "multi_qa", "super_glue/rte", "super_glue/wsc.fixed", "toy_nli"]
    multi = cat["multi_qa"]  # two subsets grouped into one task; an identical template text kept once
    assert multi.family == "multi_qa"
    assert len(multi.meta["templates"]) == 4
    assert {t["subset"] for t in multi.meta["templates"]} == {"sub_a", "sub_b"}
    assert len(multi.instructions) == 3
    assert multi.meta["sources"] == ["multi_qa/sub_a", "multi_qa/sub_b"]
    assert cat["super_glue/rte"].family == "super_glue/rte"
    assert "empty_ds" not in cat


def test_p3_instruction_placeholders_and_tags():
    cat = p3.load(FIX / "p3")
    toy = cat["toy_nli"]
    # the third template has an empty input side and is skipped
    assert toy.instructions == [
        '[premise] Does this mean that "[hypothesis]"? [answer_choices]?',
        "Premise: [premise] and so on. Write a short hypothesis.",
    ]
    assert [t["name"] for t in toy.meta["templates"]] == ["does this mean", "generate hypothesis"]
    tpl = toy.meta["templates"][0]
    assert tpl["answer_choices"] == "yes ||| maybe ||| no"
    assert tpl["metrics"] == ["Accuracy"] and tpl["original_task"] is True and tpl["languages"] == ["en"]
    assert cat["multi_qa"].instructions[1] == '[context] Write a question whose answer is "[answers.text]".'
    assert cat["super_glue/wsc.fixed"].instructions[0].startswith('[text] Here "[span2_text]" means [span1_text].')
    assert cat["imdb"].instructions == ["Review: [text] Is this review positive or negative?"]


@pytest.mark.parametrize("expr, expected", [
    ("premise", "[premise]"),
    (" answer_choices[label] ", "[answer_choices]"),
    ('answer_choices | join(", ")', "[answer_choices]"),
    ("span2_text.lower()", "[span2_text]"),
    ('text.split(" ")[span2_index:] | join(" ") | replace(span2_text, span1_text)', "[text]"),
    ("answers.text[0]", "[answers.text]"),
    ('"Yes"', "Yes"),
    ("not flag", "[flag]"),
    ("range(3) | choice", ""),
])
def test_p3_placeholder(expr, expected):
    assert p3_templates.placeholder(expr) == expected


def test_p3_input_side_ignores_pipes_inside_tags():
    assert p3_templates.input_side('Q {{ x | join("|||") }} ||| A') == 'Q {{ x | join("|||") }} '


def test_p3_pools_categories_and_aliases():
    cat = p3.load(FIX / "p3")
    assert cat.pool("t0_train") == ["glue/qqp", "imdb"]
    assert cat.pool("t0_eval") == ["super_glue/rte", "super_glue/wsc.fixed"]
    assert cat["imdb"].category == "sentiment"
    assert cat["super_glue/rte"].category == "nli"
    assert cat["super_glue/wsc.fixed"].category == "coreference"
    assert cat.resolve("qqp") == "glue/qqp" and cat.resolve("rte") == "super_glue/rte"
    assert cat.resolve("wsc") == "super_glue/wsc.fixed"
    assert len(p3.T0_TRAIN) == 35 and len(p3.T0_EVAL) == 11
    assert p3.t0_task_id("hotpot_qa") == "kilt_tasks/hotpotqa"
    assert p3.t0_task_id("yelp") == "yelp_review_full"


def test_p3_hook_rows_render_with_promptsource_semantics():
    cat = p3.load(FIX / "p3")
    toy = cat["toy_nli"]
    assert toy.has_examples and not cat["imdb"].has_examples
    exs = toy.examples()
    assert len(exs) == 4  # row 2 has label -1 and an empty hypothesis: both targets empty, skipped
    first = exs[0]
    assert first.id == "toy_nli:aaaa0001-0000-0000-0000-000000000001:0"
    # "|||" inside a row value is protected, the choices come from answer_choices
    assert first.input == ('Cats sleep a lot during the day. Does this mean that "Cats are awake all day ||| always"?'
                           " yes, maybe, no?")
    assert first.options == ["yes", "maybe", "no"] and first.label == 2 and first.references == ["no"]
    assert first.provenance["template_name"] == "does this mean" and first.provenance["row"] == 0
    gen = exs[1]
    assert gen.options is None and gen.label is None
    assert gen.references == ["Cats are awake all day ||| always"]
    assert gen.input.startswith("Premise:") and gen.input.endswith("Write a short hypothesis.")


def test_p3_superglue_rows_converted():
    cat = p3.load(FIX / "p3")
    rte = cat["super_glue/rte"].examples()
    assert len(rte) == 6  # 3 rows x 2 templates
    assert [e.label for e in rte[::2]] == [0, 1, 0]  # entailment -> Yes (0), not_entailment -> No (1)
    assert rte[1].input.endswith("Statement: The bakery sells bread. True or False?")
    assert rte[1].options == ["True", "False"] and rte[1].target == "True"
    wsc = cat["super_glue/wsc.fixed"].examples()
    assert [e.target for e in wsc] == ["Yes", "No"]
    assert 'word number 9, i.e. "it"' in wsc[0].input
    assert wsc[0].provenance["file"].endswith("WSC/val.jsonl")
    # the test split has no labels: every target renders empty and the row is skipped
    assert p3.load(FIX / "p3", split="test")["super_glue/rte"].examples() == []


def test_p3_subset_hook_and_seeded_choice(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIX / "p3", root)
    rows = root / "p3" / "multi_qa__sub_a"
    rows.mkdir(parents=True)
    (rows / "val.jsonl").write_text(json.dumps({
        "context": "Rivers flow to the sea.", "question": "Where do rivers flow?",
        "answers": {"text": ["to the sea", "the sea", "into the sea"]}}) + "\n")
    task = p3.load(root)["multi_qa"]
    exs = task.examples()
    assert {e.provenance["template_id"][:4] for e in exs} == {"bbbb"}  # only sub_a's templates
    assert exs[0].input == ("Read the passage and answer. Passage: Rivers flow to the sea. "
                            "Question: Where do rivers flow?")
    assert exs[0].references == ["to the sea"]
    assert [e.input for e in task.examples()] == [e.input for e in exs]  # the choice filter is seeded
    assert any(f'"{a}"' in exs[1].input for a in ("to the sea", "the sea", "into the sea"))


def test_registry_dispatch(tmp_path):
    assert len(load_catalog("bbh", FIX / "bbh")) == 3
    assert load_catalog("bigbench", FIX / "bigbench").name == "bigbench"
    assert load_catalog("p3", FIX / "p3", split="val")["toy_nli"].has_examples
    assert load_catalog("niv2", FIX / "niv2", with_positive_examples=1).name == "niv2"
    assert load_catalog(str(FIX / "user" / "tasks.yaml")).ids[0] == "review_sentiment"


def test_p3_bad_inputs(tmp_path):
    with pytest.raises(InstaError, match="P3 templates not found"):
        p3.load(tmp_path)
    bad = tmp_path / "promptsource" / "templates" / "broken"
    bad.mkdir(parents=True)
    (bad / "templates.yaml").write_text("templates:\n  a: !Template\n    jinja: '{{x}\n   - :")
    with pytest.raises(InstaError, match=r"malformed P3 templates file .*broken/templates.yaml"):
        p3.load(tmp_path)


def test_p3_bad_row_file(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIX / "p3", root)
    (root / "p3" / "toy_nli" / "val.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n{oops\n')
    task = p3.load(root)["toy_nli"]
    with pytest.raises(InstaError, match="line 2"):
        task.examples()


# ---------------------------------------------------------------- BIG-bench


def test_bigbench_tasks_families_and_instructions():
    cat = bigbench.load(FIX / "bigbench")
    assert cat.ids == ["color_quiz", "echo_words", "shape_family/circles", "shape_family/squares", "tie_scores"]
    assert "shape_family" not in cat  # a parent without examples is not a task...
    assert cat.members("shape_family") == ["shape_family/circles", "shape_family/squares"]  # ...but a family
    assert cat.without(families=["shape_family"]).ids == ["color_quiz", "echo_words", "tie_scores"]
    quiz = cat["color_quiz"]
    assert quiz.instructions == ["Name the color of everyday objects", "Answer each question about colors."]
    assert quiz.category == "common sense" and quiz.keywords == ["common sense", "multiple choice"]
    assert quiz.meta["n_examples"] == 4 and quiz.meta["has_target_scores"] is True
    assert quiz.meta["preferred_score"] == "multiple_choice_grade"
    assert cat["shape_family/squares"].instructions == ["Answer questions about simple shapes"]  # inherited
    assert cat["shape_family/circles"].instructions == ["Questions about circles"]  # deduplicated
    assert cat["shape_family/circles"].category == ""
    assert cat["echo_words"].meta["has_target_scores"] is False


def test_bigbench_prompt_format_and_labels():
    cat = bigbench.load(FIX / "bigbench")
    ex = cat["color_quiz"].examples()[0]
    assert ex.id == "color_quiz:0"
    assert sorted(ex.options) == ["black", "blue", "purple", "yellow"]
    expected = "Answer each question about colors.\n\nQ: What color is a ripe banana?" + "".join(
        f"\n  choice: {o}" for o in ex.options) + "\nA:"
    assert ex.input == expected
    assert ex.target == "yellow" and ex.references == ["yellow"]
    assert ex.provenance["separator"] == " "
    squares = cat["shape_family/squares"].examples()[0]
    assert squares.input.startswith("Q: How many corners") and "\n - 4" in squares.input
    circles = cat["shape_family/circles"].examples()[0]
    assert circles.input == "Questions about circles\nQ: Does a circle have corners?\nA:"  # no choices appended
    echo = cat["echo_words"].examples()
    assert len(echo) == 2  # the example without a target is skipped
    assert echo[0].input == "Word: lantern\nRepeat:" and echo[0].options is None and echo[0].label is None
    assert echo[1].references == ["pebble", "Pebble"]


def test_bigbench_tied_scores():
    ex = bigbench.load(FIX / "bigbench")["tie_scores"].examples()[0]
    assert sorted(ex.references) == ["2", "4", "8"]
    assert ex.target == "2"  # the first best option in file order
    assert [o for o in ex.options if o in ex.references] == ex.references


def test_bigbench_shuffle_is_stable_across_processes():
    here = [e.options for e in bigbench.load(FIX / "bigbench")["color_quiz"].examples()]
    assert any(opts[0] != first for opts, first in zip(here, ["yellow", "white", "blue", "green"]))  # shuffled
    code = (
        "import json, sys; from pathlib import Path; from insta.catalogs import bigbench; "
        f"c = bigbench.load(Path({str(FIX / 'bigbench')!r}), cache=False); "
        "print(json.dumps([e.options for e in c['color_quiz'].examples()]))"
    )
    for seed in ("1", "987"):
        env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here
    unshuffled = bigbench.load(FIX / "bigbench", shuffle_options=False)["color_quiz"].examples()[0]
    assert unshuffled.options == ["yellow", "blue", "purple", "black"]


def test_bigbench_index_cache_hit_change_and_corruption(tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(FIX / "bigbench", root)
    calls = []
    real = bigbench._summary
    monkeypatch.setattr(bigbench, "_summary", lambda p: calls.append(p) or real(p))
    first = bigbench.load(root)
    assert len(calls) == 6
    calls.clear()
    second = bigbench.load(root)
    assert calls == [] and second.ids == first.ids  # nothing re-parsed
    assert second["color_quiz"].instructions == first["color_quiz"].instructions
    # a changed file is parsed again, the others come from the cache
    f = root / "big-bench" / "echo_words" / "task.json"
    data = json.loads(f.read_text())
    data["description"] = "Repeat the word exactly"
    f.write_text(json.dumps(data))
    assert bigbench.load(root)["echo_words"].instructions == ["Repeat the word exactly"]
    assert [p.parent.name for p in calls] == ["echo_words"]
    # a corrupt cache is ignored and rebuilt
    cache_file = index_cache.cache_path("bigbench", root / "big-bench", bigbench.INDEX_VERSION)
    assert cache_file.is_file()
    cache_file.write_text("{not json")
    calls.clear()
    assert bigbench.load(root).ids == first.ids
    assert len(calls) == 6
    assert json.loads(cache_file.read_text())["files"]
    calls.clear()
    bigbench.load(root)
    assert calls == []


def test_bigbench_bad_inputs(tmp_path):
    with pytest.raises(InstaError, match="BIG-bench tasks not found"):
        bigbench.load(tmp_path)
    (tmp_path / "big-bench" / "broken").mkdir(parents=True)
    (tmp_path / "big-bench" / "broken" / "task.json").write_text('{"name": "broken", ')
    with pytest.raises(InstaError, match=r"malformed BIG-bench task file .*broken/task.json"):
        bigbench.load(tmp_path)


# ---------------------------------------------------------------- BBH


def test_bbh_tasks_families_and_instructions():
    cat = bbh.load(FIX / "bbh")
    assert cat.ids == ["is_it_true", "logical_deduction_three_objects", "sum_twice"]
    ld = cat["logical_deduction_three_objects"]
    assert ld.family == "logical_deduction" and ld.meta["parent"] == "logical_deduction"
    assert ld.instructions == [
        "Order three objects from clues",
        "Order objects from clues",
        "The following paragraphs each describe three fruits in a row. The statements are consistent.",
    ]
    assert cat["is_it_true"].instructions == ["Is the following statement true?"]  # 4 of 5 inputs = 80%
    assert cat["sum_twice"].instructions == ["1 + 2 * 2 ="]  # no shared lead: the first input line


def test_bbh_options_and_malformed_targets():
    cat = bbh.load(FIX / "bbh")
    ld = cat["logical_deduction_three_objects"]
    assert ld.meta["dropped"] == [{"index": 3, "target": "The olive",
                                   "reason": "target is not one of the listed options (A)-(B)"}]
    exs = ld.examples()
    assert [e.id for e in exs] == [f"logical_deduction_three_objects:{i}" for i in (0, 1, 2, 4)]
    assert exs[0].options == ["(A)", "(B)", "(C)"] and exs[0].label == 0
    assert exs[1].target == "(C)"
    assert exs[0].input.startswith("Q: The following paragraphs")
    assert exs[0].input.endswith("(C) The lime is leftmost\nA:")
    yes_no = cat["is_it_true"].examples()
    assert yes_no[0].options == ["no", "yes"] and yes_no[0].label == 1 and yes_no[1].label == 0
    assert cat["is_it_true"].meta["answer_format"] == "closed"
    free = cat["sum_twice"].examples()
    assert len(free) == 11 and free[0].options is None and free[0].label is None and free[0].references == ["5"]
    assert cat["sum_twice"].meta["answer_format"] == "free"


def test_bbh_common_lead():
    assert bbh.common_lead(["Pick one.\nA", "Pick one.\nB", "Pick one.\nC", "Other.\nD"]) == ""  # 75% < 80%
    assert bbh.common_lead(["Go. Now: a", "Go. Now: b", "Go. Now: c"]) == ""  # under 3 words
    assert bbh.common_lead(["Please do this task. x", "Please do this task. y"]) == "Please do this task."
    assert bbh.parent_of("formal_fallacies") == "formal_fallacies_syllogisms_negation"
    assert bbh.parent_of("tracking_shuffled_objects_seven_objects") == "tracking_shuffled_objects"


def test_bbh_bad_inputs(tmp_path):
    with pytest.raises(InstaError, match="BBH tasks not found"):
        bbh.load(tmp_path)
    (tmp_path / "bbh").mkdir()
    (tmp_path / "bbh" / "x.json").write_text('{"examples": [{"input": "q"}]}')
    with pytest.raises(InstaError, match="example 0 lacks"):
        bbh.load(tmp_path)


# ---------------------------------------------------------------- NIV2


def test_niv2_tasks_pools_and_metadata():
    cat = niv2.load(FIX / "niv2")
    assert cat.ids == ["task901_toy_answerability", "task902_toy_title_generation", "task903_toy_word_analogy",
                       "task904_toy_translation_es"]
    assert cat.pool("train") == ["task902_toy_title_generation", "task904_toy_translation_es"]
    assert cat.pool("test") == ["task901_toy_answerability", "task903_toy_word_analogy"]
    title = cat["task902_toy_title_generation"]
    assert title.instructions == ["Write a short title for the given paragraph.\n"
                                  "The title should be at most eight words long."]
    assert title.category == "Title Generation" and title.keywords == ["Title Generation", "News"]
    assert title.language == "en" and title.family == title.id
    assert cat["task904_toy_translation_es"].language == "es"
    assert cat["task901_toy_answerability"].meta["n_instances"] == 3


def test_niv2_positive_examples_and_instances():
    cat = niv2.load(FIX / "niv2", with_positive_examples=2, max_instances=2)
    ins = cat["task901_toy_answerability"].instructions[0]
    assert ins.count("Positive Example") == 2 and "Positive Example 3" not in ins
    assert "\n\nPositive Example 1 -\nInput: Passage: Paris is the capital of France." in ins
    assert "\nOutput: Yes\n\nPositive Example 2 -" in ins
    assert cat["task903_toy_word_analogy"].instructions == ["Complete the analogy with one word."]  # none to add
    exs = cat["task901_toy_answerability"].examples()
    assert [e.id for e in exs] == ["task901-a1", "task901-a2"]
    question = "Passage: The shop opens at nine. Question: When does the shop open?"
    assert exs[0].input == ins + f"\n\nInput: {question}\nOutput:"
    assert exs[0].references == ["Yes"]
    multi = niv2.load(FIX / "niv2")["task902_toy_title_generation"].examples()
    assert multi[0].references == ["Snow closes schools", "Schools closed by heavy snow"]
    assert multi[0].input.startswith("Write a short title for the given paragraph.\nThe title")


def test_niv2_missing_tasks_and_bad_files(tmp_path):
    with pytest.raises(InstaError, match="git clone https://github.com/allenai/natural-instructions"):
        niv2.load(tmp_path)
    tasks = tmp_path / "natural-instructions" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "task1_empty.json").write_text(json.dumps({"Definition": [""], "Instances": []}))
    with pytest.raises(InstaError, match="empty Definition"):
        niv2.load(tmp_path)
    (tasks / "task1_empty.json").write_text("[1, 2")
    with pytest.raises(InstaError, match="malformed NIV2 task file"):
        niv2.load(tmp_path)


# ---------------------------------------------------------------- user task files


def test_user_yaml_and_examples():
    cat = user.load(FIX / "user" / "tasks.yaml")
    assert cat.ids == ["review_sentiment", "headline_writing"]
    rs = cat["review_sentiment"]
    assert rs.instructions[1] == "Decide whether the customer liked the product."
    assert rs.category == "sentiment" and rs.keywords == ["reviews", "classification"] and rs.pools == {"targets"}
    exs = rs.examples()
    assert [(e.options, e.label, e.target) for e in exs[:2]] == [
        (["negative", "positive"], 0, "negative"), (["negative", "positive"], 1, "positive")]
    assert exs[1].id == "rs-2" and exs[0].id == "review_sentiment:0"
    assert exs[2].options is None and exs[2].references == ["fine", "satisfied"]
    hw = cat["headline_writing"]
    assert hw.instructions == ["Write a headline for the news paragraph."] and hw.family == "news"
    assert not hw.has_examples


def test_user_jsonl_and_registry():
    cat = load_catalog(str(FIX / "user" / "tasks.jsonl"))
    assert cat.ids == ["riddle_answering", "list_sorting"]
    assert cat["list_sorting"].keywords == ["math"] and cat["riddle_answering"].category == "qa"


@pytest.mark.parametrize("suffix, text, message", [
    (".yaml", "tasks:\n  - instructions: [hello]\n", "missing 'id'"),
    (".yaml", "- id: a\n  instructions: []\n", "'instructions' is empty"),
    (".yaml", "- id: a\n  instructions: ['ok', '  ']\n", "'instructions' holds an empty string"),
    (".yaml", "- id: a\n", "missing 'instructions'"),
    (".yaml", "- id: a\n  instructions: x\n- id: a\n  instructions: y\n", "duplicate task id 'a'"),
    (".yaml", "- id: a\n  instrutions: x\n", "unknown field 'instrutions'"),
    (".yaml", "- id: a\n  instructions: x\n  examples: nowhere.jsonl\n",
     "examples file .*nowhere.jsonl does not exist"),
    (".yaml", "tasks: [id: a\n", "malformed YAML"),
    (".yaml", "just a string\n", "expected a list of tasks"),
    (".yaml", "[]\n", "holds no task"),
    (".jsonl", '{"id": "a", "instructions": ["x"]}\n{"id": "b", "instructions": \n', "line 2"),
    (".jsonl", '{"id": "a", "instructions": 5}\n', "must be a string or a list of strings"),
    (".txt", "id: a\n", "must end in .jsonl"),
])
def test_user_errors(tmp_path, suffix, text, message):
    path = tmp_path / f"tasks{suffix}"
    path.write_text(text)
    with pytest.raises(InstaError, match=message) as err:
        user.load(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("line, message", [
    ('{"input": "q", "options": ["a", "b"], "answer": "c"}', "answer 'c' is not one of the options"),
    ('{"input": "q", "options": ["a", "b"], "answer": 2}', "out of range"),
    ('{"input": "q"}', "needs 'output'"),
    ('{"output": "x"}', "needs a string 'input'"),
    ('{"input": "q", "output": ""}', "empty string"),
    ("{broken", "malformed JSON .* line 1"),
])
def test_user_example_errors(tmp_path, line, message):
    (tmp_path / "ex.jsonl").write_text(line + "\n")
    (tmp_path / "t.yaml").write_text("- id: a\n  instructions: x\n  examples: ex.jsonl\n")
    task = user.load(tmp_path / "t.yaml")["a"]
    with pytest.raises(InstaError, match=message):
        task.examples()


def test_user_missing_file(tmp_path):
    with pytest.raises(InstaError, match="does not exist"):
        user.load(tmp_path / "none.yaml")


# ---------------------------------------------------------------- cache helper


def test_index_cache_unwritable_dir_still_parses(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("INSTA_CACHE_DIR", str(blocker))
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert index_cache.cached_parse("t", tmp_path, [f], lambda p: p.read_text()) == {"a.txt": "x"}


def test_split_placeholder_collapses_to_one():
    from insta.catalogs.p3_templates import template_instruction

    text = template_instruction("Fact: {{ fact1[0]|capitalize }}{{ fact1[1:]|trim }}. {{a}} and {{a}} ||| {{b}}")
    assert text == "Fact: [fact1]. [a] and [a]"
