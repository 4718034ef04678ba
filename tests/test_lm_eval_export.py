"""``insta export-lm-eval``: the written task loads in lm-evaluation-harness's TaskManager (include_path) and its
requests are insta's exact prompts and options (multiple choice, generation, P3 templates as a group); tasks that
one lm-eval task cannot represent are refused."""
import json
from pathlib import Path

import pytest

from insta.catalogs import load_catalog
from insta.cli import main
from insta.errors import InstaError
from insta.evaluate.lm_eval_export import export_lm_eval_task
from insta.prompt_format import join_prompt_target
from insta.records import Example

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def lm_eval_tasks(include_path: Path, name: str) -> dict:
    """{task name: ConfigurableTask} of a task or group, loaded the way `lm-eval run --include_path` does."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tm = TaskManager(include_path=str(include_path), include_defaults=False)
    out = {}

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            else:
                out[getattr(k, "group_name", k) if not isinstance(k, str) else k] = v

    walk(get_task_dict([name], tm))
    return out


def requests_of(task) -> list[tuple[str, list[str], object]]:
    """(context, [full string scored for each choice], target) per document, as the harness builds them."""
    rows = []
    for doc in task.test_docs():
        ctx = task.doc_to_text(doc)
        if task.OUTPUT_TYPE == "multiple_choice":
            rows.append((ctx, [ctx + task.config.target_delimiter + c for c in task.doc_to_choice(doc)],
                         task.doc_to_target(doc)))
        else:
            rows.append((ctx, [], task.doc_to_target(doc)))
    return rows


def insta_strings(ex: Example) -> list[str]:
    """What insta scores for each option: the prompt joined to the option (a space unless it ends in one)."""
    return ["".join(join_prompt_target(ex.input, o)) for o in ex.options]


def test_multiple_choice_task_has_insta_prompts_through_the_cli(tmp_path, capsys):
    out = tmp_path / "lm"
    rc = main(["export-lm-eval", "color_quiz", "--catalog", "bigbench", "--data-dir", str(FIX / "bigbench"),
               "--out", str(out), "--json", str(tmp_path / "export.json")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote lm-eval task insta_color_quiz" in printed and "--include_path" in printed
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["output_type"] == "multiple_choice" and info["tasks"] == ["insta_color_quiz"]
    exs = load_catalog("bigbench", FIX / "bigbench", cache=False).get("color_quiz").examples()
    task = lm_eval_tasks(out, "insta_color_quiz")["insta_color_quiz"]
    rows = requests_of(task)
    assert len(rows) == len(exs) == info["n"]
    for (ctx, strings, target), ex in zip(rows, exs):
        assert ctx == ex.input and strings == insta_strings(ex) and target == ex.label
    assert task.config.target_delimiter == " "
    assert {m["metric"] for m in task.config.metric_list} == {"acc", "acc_norm"}


def test_generation_task_and_templates_group(tmp_path):
    exs = load_catalog("bigbench", FIX / "bigbench", cache=False).get("echo_words").examples()
    info = export_lm_eval_task(exs, tmp_path / "gen", "echo", stop=("\n", "Word:"), max_new_tokens=7)
    assert info["output_type"] == "generate_until"
    task = lm_eval_tasks(tmp_path / "gen", "echo")["echo"]
    for (ctx, _, target), ex in zip(requests_of(task), exs):
        assert ctx == ex.input.rstrip(" ") and target == [r for r in ex.references if r.strip()]
    assert task.config.generation_kwargs["until"] == ["\n", "Word:"]
    assert task.config.generation_kwargs["max_gen_toks"] == 7 and task.config.generation_kwargs["do_sample"] is False
    # P3: one lm-eval task per promptsource template, grouped and averaged unweighted (T0's protocol)
    rte = load_catalog("p3", FIX / "p3", cache=False).get("super_glue/rte")
    exs = rte.examples()
    info = export_lm_eval_task(rte, tmp_path / "rte")
    templates = sorted({ex.provenance["template_id"] for ex in exs})
    assert info["name"] == "insta_super_glue_rte" and len(info["tasks"]) == len(templates) == 2
    tasks = lm_eval_tasks(tmp_path / "rte", "insta_super_glue_rte")
    assert set(tasks) == set(info["tasks"])
    seen = []
    for name in info["tasks"]:
        for doc, (_ctx, strings, target) in zip(tasks[name].test_docs(), requests_of(tasks[name])):
            ex = next(e for e in exs if e.id == doc["id"])
            assert doc["template_id"] == ex.provenance["template_id"]
            assert strings == insta_strings(ex) and target == ex.label
            seen.append(ex.id)
    assert sorted(seen) == sorted(e.id for e in exs)
    import yaml

    group = yaml.safe_load((tmp_path / "rte" / "insta_super_glue_rte.yaml").read_text())
    assert group["task"] == info["tasks"]
    assert all(m["weight_by_size"] is False for m in group["aggregate_metric_list"])


def test_delimiters_and_refusals(tmp_path):
    def ex(i, prompt, options=("yes", "no")):
        return Example(id=str(i), input=prompt, references=["yes"], options=list(options), label=0)

    # every prompt ends in whitespace: no delimiter, the text as is
    info = export_lm_eval_task([ex(0, "Q: a\nA: "), ex(1, "Q: b\nA:\n")], tmp_path / "ws", "ws")
    task = lm_eval_tasks(tmp_path / "ws", "ws")["ws"]
    assert task.config.target_delimiter == ""
    for (_, strings, _), e in zip(requests_of(task), [ex(0, "Q: a\nA: "), ex(1, "Q: b\nA:\n")]):
        assert strings == insta_strings(e)
    assert info["n"] == 2
    # mixed: a prompt ending in one space loses it and the delimiter restores it
    mixed = [ex(0, "Q: a\nA: "), ex(1, "Q: b\nA:")]
    export_lm_eval_task(mixed, tmp_path / "mixed", "mixed")
    for (_, strings, _), e in zip(requests_of(lm_eval_tasks(tmp_path / "mixed", "mixed")["mixed"]), mixed):
        assert strings == insta_strings(e)
    with pytest.raises(InstaError, match="ends in '\\\\n' while others"):
        export_lm_eval_task([ex(0, "Q: a\nA:\n"), ex(1, "Q: b\nA:")], tmp_path / "bad")
    with pytest.raises(InstaError, match="starts with whitespace"):
        export_lm_eval_task([ex(0, "Q: a\nA:", (" yes", "no"))], tmp_path / "bad")
    with pytest.raises(InstaError, match="mixes examples with and without answer options"):
        export_lm_eval_task([ex(0, "Q: a"), Example(id="g", input="Q: b", references=["x"])], tmp_path / "bad")
    with pytest.raises(InstaError, match="lm-eval task name"):
        export_lm_eval_task([ex(0, "Q: a")], tmp_path / "bad", "has space")
    assert not (tmp_path / "bad").exists()
    assert main(["export-lm-eval", "nope", "--catalog", "bigbench", "--data-dir", str(FIX / "bigbench"),
                 "--out", str(tmp_path / "x")]) == 2
