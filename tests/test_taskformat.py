"""The output space of a task (format-aware INSTA): promptsource answer_choices, options from examples,
generation markers, unknown formats."""
from pathlib import Path

from insta.catalogs import load_catalog
from insta.records import Example, Task
import random

import pytest

from insta.taskformat import FREE_TEXT, format_aware_texts, known, output_spaces, task_output_space

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
    # literal options listed sorted; two row fields and no example to read them from: "one of 2 options"
    assert output_spaces(task) == ["Answer options: No | Yes.", "Answer: one of 2 options given with the input.",
                                   FREE_TEXT]
    assert format_aware_texts(task)[0] == "Is [premise] true? Yes or no?\nAnswer options: No | Yes."


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


def _templated(tid, templates, examples=None):
    return _task(tid, list(dict.fromkeys(t["instruction"] for t in templates)), examples,
                 meta={"templates": templates})


NLI = [{"id": f"t{i}", "instruction": f"NLI prompt {i} [premise] [hypothesis]", "answer_choices": choices}
       for i, choices in enumerate(["Yes ||| Maybe ||| No", "Correct ||| Inconclusive ||| Incorrect",
                                    "Yes ||| No ||| Maybe", "yes-no {{'Yes'}} ||| {{'Maybe'}} ||| {{'No'}}"])]
NLI[3]["answer_choices"] = "{{'Yes'}} ||| {{ 'Maybe' }} ||| {{\"No\"}}"  # literal strings in Jinja tags


def test_task_space_uses_every_template_in_any_order():
    spaces = set()
    for seed in range(6):
        shuffled = NLI[:]
        random.Random(seed).shuffle(shuffled)
        spaces.add(task_output_space(_templated(f"nli{seed}", shuffled)))
    # three of the four templates say Yes/Maybe/No in some order: that set wins whatever the file order
    assert spaces == {"Answer options: Maybe | No | Yes."}


def test_first_template_without_choices_does_not_make_a_task_free_text():
    templates = [{"id": "g", "instruction": "Explain [x].", "answer_choices": None}] + [
        {"id": f"c{i}", "instruction": f"Is [x] good? ({i})", "answer_choices": "No ||| Yes"} for i in range(3)]
    task = _templated("firstfree", templates)
    assert output_spaces(task)[0] == FREE_TEXT
    assert task_output_space(task) == "Answer options: No | Yes."


def test_row_choices_are_resolved_from_examples_or_marked_unknown():
    templates = [{"id": "e1", "instruction": "Finish: [ctx]", "answer_choices": "{{ endings | join(' ||| ') }}"},
                 {"id": "e2", "instruction": "Pick an ending for [ctx]", "answer_choices": "{{endings}}"}]
    assert task_output_space(_templated("noex", templates)) is None  # no example to read the endings from
    assert output_spaces(_templated("noex2", templates)) == [None, None]
    exs = [Example(f"x:{t}:{i}", f"in{i}", ["a"], [f"end{i}a", f"end{i}b", f"end{i}c", f"end{i}d"], 0,
                   provenance={"template_id": t}) for i in range(5) for t in ("e1", "e2")]
    resolved = _templated("withex", templates, exs)
    assert task_output_space(resolved) == "Answer: one of 4 options given with the input."
    fixed = [Example(f"y:{t}:{i}", f"in{i}", ["b"], ["b", "a"], 0, provenance={"template_id": t})
             for i in range(3) for t in ("e1", "e2")]
    assert task_output_space(_templated("fixedex", templates, fixed)) == "Answer options: a | b."


def test_unresolved_row_choices_outvoting_the_known_spaces_leave_the_task_unknown():
    templates = [{"id": f"u{i}", "instruction": f"Choose for [q] ({i})", "answer_choices": "{{choices.text}}"}
                 for i in range(3)] + [{"id": "f", "instruction": "Answer [q].", "answer_choices": None}]
    assert task_output_space(_templated("mostlyunknown", templates)) is None


@pytest.mark.slow
def test_real_promptsource_templates_give_order_free_task_spaces():
    import os

    data = os.environ.get("INSTA_DATA_DIR")
    if not data or not (Path(data) / "promptsource" / "templates").is_dir():
        pytest.skip("promptsource templates not in $INSTA_DATA_DIR")
    from insta.records import Task as T

    p3 = load_catalog("p3", data)
    n_listed = 0
    for task in p3:
        space = task_output_space(task)
        # no bare placeholder survives: row choices are read from examples, counted, or unknown
        assert space is None or "[" not in space, (task.id, space)
        templates = task.meta["templates"]
        reordered = T(id=task.id + "#rev", instructions=list(reversed(task.instructions)), catalog="p3",
                      meta={"templates": list(reversed(templates))}, loader=task.loader)
        assert task_output_space(reordered) == space, task.id
        n_listed += bool(space and space.startswith("Answer options:"))
    assert n_listed > len(p3) // 3
    # NLI tasks whose templates ask the same question in a different order share one space
    assert len({task_output_space(p3.get(t)) for t in ("anli", "super_glue/cb", "glue/mnli")}) == 1
    # a task with examples here (SuperGLUE COPA-style row choices are counted; RTE's are literal)
    assert task_output_space(p3.get("super_glue/rte")) == "Answer options: No | Yes."
