"""The output space of a task (format-aware INSTA): promptsource answer_choices, options from examples,
generation markers, unknown formats."""
from pathlib import Path

from insta.catalogs import load_catalog
from insta.records import Example, Task
from insta.taskformat import FREE_TEXT, format_aware_texts, known, output_spaces

DATA = Path(__file__).parent / "fixtures" / "experiment" / "data"


def _task(tid, instructions, examples=None, meta=None):
    exs = examples or []
    return Task(id=tid, instructions=instructions, catalog="toy", meta=meta or {},
                loader=(lambda: iter(exs)) if examples is not None else None)


def test_p3_templates_give_each_instruction_its_answer_choices():
    meta = {"templates": [
        {"instruction": "Is [premise] true? Yes or no?", "answer_choices": "Yes ||| No"},
        {"instruction": "Which option fits [sentence]?", "answer_choices": "{{ option1 }} ||| {{option2}}"},
        {"instruction": "Summarise [article].", "answer_choices": None},
    ]}
    task = _task("p3task", ["Is [premise] true? Yes or no?", "Which option fits [sentence]?", "Summarise [article]."],
                 meta=meta)
    assert output_spaces(task) == ["Answer options: Yes | No.", "Answer options: [option1] | [option2].", FREE_TEXT]
    assert format_aware_texts(task)[0] == "Is [premise] true? Yes or no?\nAnswer options: Yes | No."


def test_examples_decide_fixed_options_varying_options_and_generation():
    fixed = [Example(str(i), f"x{i}", ["True"], ["True", "False"] if i % 2 else ["False", "True"], 0) for i in range(6)]
    varying = [Example(str(i), f"x{i}", ["a"], [f"o{i}", f"p{i}", "q", "r"], 0) for i in range(6)]
    short = [Example(str(i), f"x{i}", ["Paris"]) for i in range(4)]
    long = [Example(str(i), f"x{i}", ["a sentence of many words here"]) for i in range(4)]
    assert output_spaces(_task("f", ["i"], fixed)) == ["Answer options: False | True."]
    assert output_spaces(_task("v", ["i"], varying)) == ["Answer: one of 4 options given with the input."]
    assert output_spaces(_task("s", ["i"], short)) == ["Answer: a short phrase."]
    assert output_spaces(_task("l", ["i", "j"], long)) == [FREE_TEXT, FREE_TEXT]
    none = _task("n", ["i"])
    assert output_spaces(none) == [None] and not known(none) and format_aware_texts(none) == ["i"]


def test_bigbench_fixture_tasks_get_their_target_options():
    bigbench = load_catalog("bigbench", DATA)
    spaces = output_spaces(bigbench.get("animal_facts"))
    assert spaces == ["Answer options: False | True."] * len(bigbench.get("animal_facts").instructions)
