"""Mixture builder: seeded per-task sampling, mixing, leakage, provenance, formats, errors, CLI."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.cli import main  # noqa: E402
from insta.errors import InstaError  # noqa: E402
from insta.mixture import (  # noqa: E402
    LeakFilter,
    MixtureConfig,
    build_mixture,
    export_record,
    join_prompt_target,
    make_record,
    manifest_path,
    mixture_from_selection,
    read_mixture,
    read_selection,
)
from insta.records import Example, Task  # noqa: E402


def big_task(tid: str, n: int, instruction: str = "Copy the word.") -> Task:
    exs = [Example(id=str(i), input=f"{instruction}\nWord: w{tid}{i}\nAnswer:", references=[f"w{i}"],
                   provenance={"index": i}) for i in range(n)]
    return Task(id=tid, instructions=[instruction], catalog="synthetic", loader=lambda: iter(exs))


@pytest.fixture
def catalog():
    return tiny_lm.toy_catalog()


def test_per_task_cap_seeded_uniform_sample():
    tasks = [big_task("t1", 500), big_task("t2", 50)]
    mix = build_mixture(tasks, MixtureConfig(per_task=20, seed=1))
    assert mix.counts() == {"t1": 20, "t2": 20}
    again = build_mixture(tasks, MixtureConfig(per_task=20, seed=1))
    assert [r["id"] for r in mix] == [r["id"] for r in again]
    other = build_mixture(tasks, MixtureConfig(per_task=20, seed=2))
    assert {r["id"] for r in mix} != {r["id"] for r in other}
    idx = [int(r["instance_id"]) for r in mix if r["task"] == "t1"]
    assert max(idx) > 100  # a sample over the whole task, not its first rows
    # a task's sample does not depend on the other tasks in the mixture
    alone = build_mixture([tasks[0]], MixtureConfig(per_task=20, seed=1))
    assert {r["id"] for r in alone} == {r["id"] for r in mix if r["task"] == "t1"}


def test_per_task_cap_override_and_proportional_total():
    tasks = [big_task("t1", 300), big_task("t2", 100), big_task("t3", 10)]
    mix = build_mixture(tasks, MixtureConfig(per_task=100, caps={"t1": 200}))
    assert mix.counts() == {"t1": 200, "t2": 100, "t3": 10}
    mix = build_mixture(tasks, MixtureConfig(per_task=100, caps={"t1": 200}, total=31))
    assert mix.counts() == {"t1": 20, "t2": 10, "t3": 1}
    assert len(mix) == 31


def test_equal_mixing_repeats_small_tasks():
    tasks = [big_task("t1", 300), big_task("t2", 3)]
    mix = build_mixture(tasks, MixtureConfig(per_task=8, mixing="equal"))
    assert mix.counts() == {"t1": 8, "t2": 8}
    small = [r for r in mix if r["task"] == "t2"]
    assert len({r["id"] for r in small}) == 8  # ids stay unique
    assert len({r["instance_id"] for r in small}) == 3
    assert max(r["provenance"].get("repeat", 0) for r in small) == 2
    mix = build_mixture(tasks, MixtureConfig(per_task=8, mixing="equal", total=6))
    assert mix.counts() == {"t1": 3, "t2": 3}


def test_record_provenance_and_instruction(catalog):
    mix = mixture_from_selection(["sentiment", "capitals"], MixtureConfig(per_task=2, shuffle=False), catalog=catalog)
    r = mix.records[0]
    assert set(r) >= {"id", "task", "catalog", "instance_id", "instruction", "input", "target", "references",
                      "options", "label", "provenance"}
    assert r["task"] == "sentiment" and r["catalog"] == "toy"
    assert r["instruction"] == "Is this review positive or negative?"
    assert r["input"].startswith("Is this review positive or negative?\nReview:")
    assert r["target"] == r["options"][r["label"]]
    gen = [x for x in mix if x["task"] == "capitals"][0]
    assert gen["options"] is None and gen["target"] == gen["references"][0]


def test_instruction_from_template_meta():
    task = Task(id="p", instructions=["Does [premise] imply [hypothesis]?", "Other"], catalog="p3",
                meta={"templates": [{"id": "t-1", "instruction": "Does [premise] imply [hypothesis]?"},
                                    {"id": "t-2", "instruction": "Other"}]})
    ex = Example(id="1", input="Does it rain imply wet?", references=["yes"], provenance={"template_id": "t-1"})
    assert make_record(task, ex)["instruction"] == "Does [premise] imply [hypothesis]?"
    ex2 = Example(id="2", input="x", references=["y"], provenance={"instruction": "Given"})
    assert make_record(task, ex2)["instruction"] == "Given"


def test_join_prompt_target_rendering():
    assert join_prompt_target("Q: x\nA:", "yes") == ("Q: x\nA:", " yes")
    assert join_prompt_target("Q: x\nA: ", "yes") == ("Q: x\nA: ", "yes")
    assert join_prompt_target("Q: x\n", "yes") == ("Q: x\n", "yes")
    assert join_prompt_target("Q: x", " yes") == ("Q: x", " yes")
    assert join_prompt_target("", "yes") == ("", "yes")


def test_export_formats_roundtrip(tmp_path, catalog):
    mix = mixture_from_selection(["sentiment", "arithmetic"], MixtureConfig(per_task=3), catalog=catalog)
    rec = mix.records[0]
    alp = export_record(rec, "alpaca")
    assert alp == {"instruction": rec["instruction"], "input": rec["input"], "output": rec["target"],
                   "task": rec["task"], "id": rec["id"]}
    msg = export_record(rec, "messages")
    assert msg["messages"] == [{"role": "user", "content": rec["input"]},
                               {"role": "assistant", "content": rec["target"]}]
    for fmt in ("insta", "alpaca", "messages"):
        path = mix.write(tmp_path / f"mix-{fmt}.jsonl", fmt=fmt)
        back = read_mixture(path)
        assert [(r["input"], r["target"]) for r in back] == [(r["input"], r["target"]) for r in mix]
        man = json.loads(manifest_path(path).read_text())
        assert man["format"] == fmt and man["n_records"] == len(mix)
    assert manifest_path("a/mix.jsonl") == Path("a/mix.manifest.json")
    with pytest.raises(InstaError, match="unknown mixture format"):
        export_record(rec, "csv")


def test_hf_dataset(tmp_path, catalog):
    import datasets  # the train extra installs it

    from insta.mixture import load_mixture_dataset

    mix = mixture_from_selection(["sentiment", "capitals"], MixtureConfig(per_task=3), catalog=catalog)
    path = mix.write(tmp_path / "m.jsonl")
    ds = load_mixture_dataset(path)
    assert len(ds) == len(mix) and "input" in ds.column_names

    direct = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert direct["input"] == [r["input"] for r in mix] and direct[0]["provenance"]["task"] == mix.records[0]["task"]


def test_dedup_against_target(catalog):
    # sentiment's last review repeats the target's first sentence (a leak); everything else shares only boilerplate
    target = catalog.get("target_task")
    mix = mixture_from_selection(["sentiment", "arithmetic", "target_task_sub"],
                                 MixtureConfig(per_task=100, exclude_target="target_task"), catalog=catalog)
    info = mix.manifest["per_task"]
    assert info["sentiment"]["leaked_dropped"] == 1 and mix.counts()["sentiment"] == 4
    assert info["arithmetic"]["leaked_dropped"] == 0 and mix.counts()["arithmetic"] == 8
    assert "target_task_sub" not in mix.counts()  # same family as the target
    assert mix.manifest["excluded_target_family"] == ["target_task_sub"]
    assert mix.manifest["target"] == target.id
    no_dedup = mixture_from_selection(["sentiment"], MixtureConfig(per_task=100, exclude_target="target_task",
                                                                   dedup=False), catalog=catalog)
    assert no_dedup.counts()["sentiment"] == 5


def test_leak_filter_ignores_boilerplate():
    frame = "Answer the question about the following passage carefully and then decide.\n"
    targets = [Example(id=str(i), input=frame + f"Passage: item {i} is unique here", references=["x"])
               for i in range(30)]
    leak = LeakFilter(targets, n=8)
    assert not leak.leaks(frame + "Passage: something else entirely different")
    assert leak.leaks("Other frame. " + frame + "Passage: item 7 is unique here")
    raw = [Example(id="r", input="Prefix frame: four short words here.", references=["y"],
                   provenance={"raw_input": "four short words here"})]
    assert LeakFilter(raw, n=8).leaks("Another task: four short words here?")


def test_selection_json_and_target(tmp_path, catalog):
    sel = {"catalog": "toy", "data_dir": str(tmp_path), "target": {"task": "target_task"}, "k": 2,
           "selected": [{"rank": 1, "task": "sentiment", "score": 0.7},
                        {"rank": 2, "task": "arithmetic", "score": 0.5}],
           "config": {}}
    path = tmp_path / "sel.json"
    path.write_text(json.dumps(sel))
    assert read_selection(path)["task_ids"] == ["sentiment", "arithmetic"]
    mix = mixture_from_selection(path, MixtureConfig(per_task=2), catalog=catalog)
    assert set(mix.counts()) == {"sentiment", "arithmetic"}
    assert mix.manifest["target"] == "target_task"  # taken from the selection
    txt = tmp_path / "ids.txt"
    txt.write_text("# tasks\nsentiment\ncapitals\n")
    assert read_selection(txt)["task_ids"] == ["sentiment", "capitals"]


def test_bad_inputs(tmp_path, catalog):
    with pytest.raises(InstaError, match="unknown task 'sentimnt'.*did you mean sentiment"):
        mixture_from_selection(["sentimnt", "capitals"], catalog=catalog)
    with pytest.raises(InstaError, match="without instances: empty_task"):
        mixture_from_selection(["sentiment", "empty_task"], catalog=catalog)
    mix = mixture_from_selection(["sentiment", "empty_task"], MixtureConfig(allow_empty=True), catalog=catalog)
    assert mix.manifest["skipped_empty"] == ["empty_task"]
    with pytest.raises(InstaError, match="does not exist"):
        read_selection(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InstaError, match="malformed selection JSON"):
        read_selection(bad)
    bad.write_text(json.dumps({"selected": []}))
    with pytest.raises(InstaError, match="selects no tasks"):
        read_selection(bad)
    with pytest.raises(InstaError, match="unknown mixing"):
        build_mixture([big_task("t", 3)], MixtureConfig(mixing="random"))
    with pytest.raises(InstaError, match="listed twice"):
        build_mixture([big_task("t", 3), big_task("t", 3)])
    with pytest.raises(InstaError, match="unknown task 'nope'"):
        mixture_from_selection(["sentiment"], MixtureConfig(exclude_target="nope"), catalog=catalog)
    mfile = tmp_path / "m.jsonl"
    mfile.write_text('{"input": "x"}\n')
    with pytest.raises(InstaError, match="line 1"):
        read_mixture(mfile)
    mfile.write_text("")
    with pytest.raises(InstaError, match="no records"):
        read_mixture(mfile)


def test_cli_mixture(tmp_path, monkeypatch, capsys, catalog):
    import insta.catalogs

    monkeypatch.setattr(insta.catalogs, "load_catalog", lambda name, data_dir=None, **kw: catalog)
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"catalog": "toy", "target": {"task": "target_task"},
                               "selected": [{"task": "sentiment"}, {"task": "arithmetic"}]}))
    out = tmp_path / "mix.jsonl"
    rc = main(["mixture", "--selection", str(sel), "--per-task", "3", "--out", str(out), "--seed", "7",
               "--cap", "sentiment=2", "--mixing", "equal"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and {r["task"] for r in rows} == {"sentiment", "arithmetic"}
    assert "wrote 5 records" in capsys.readouterr().out
    rc = main(["mixture", "--tasks", "sentiment", "nope", "--catalog", "toy", "--out", str(out)])
    assert rc == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["mixture", "--out", str(out)]) == 2
    assert main(["mixture", "--selection", str(sel), "--out", str(out), "--cap", "x"]) == 2


def test_family_name_expands_to_members(catalog):
    # "target_family" is not a task id: it stands for its two member tasks
    mix = mixture_from_selection(["target_family", "sentiment"], MixtureConfig(per_task=1), catalog=catalog)
    assert set(mix.counts()) == {"target_task", "target_task_sub", "sentiment"}
    assert mix.manifest["expanded_families"] == {"target_family": ["target_task", "target_task_sub"]}


@pytest.mark.parametrize("name", ["p3", "niv2", "bigbench", "bbh"])
def test_records_from_each_catalog_format(name):
    """Every reader's examples become mixture records whose input is the rendered prompt and whose instruction
    is the one the prompt was rendered with (fixtures of tests/fixtures/<catalog>)."""
    from insta.catalogs import load_catalog

    fixtures = Path(__file__).parent / "fixtures" / name
    cat = load_catalog(name, fixtures, cache=False)
    tasks = [t for t in cat if t.has_examples and t.examples(1)]
    assert tasks, f"no {name} fixture task with examples"
    mix = build_mixture(tasks[:3], MixtureConfig(per_task=2, shuffle=False), catalog_name=name)
    by_id = {(t.id, ex.id): ex for t in tasks[:3] for ex in t.examples()}
    for r in mix:
        ex = by_id[(r["task"], r["instance_id"])]
        assert r["input"] == ex.input and r["target"] == ex.target and r["catalog"] == name
        assert r["instruction"] in cat.get(r["task"]).instructions or name == "p3"
        assert r["instruction"]


def test_mixture_from_selection_leaves_the_callers_config_alone(tmp_path, catalog):
    """The target found in the selection and the resolved caps go into the manifest, not into the caller's config
    (one config can build the mixtures of several selections)."""
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"catalog": "toy", "target": {"task": "target_task"},
                               "selected": [{"task": "sentiment"}, {"task": "arithmetic"}]}))
    config = MixtureConfig(per_task=2, caps={"sentiment": 1})
    before = repr(config)
    mix = mixture_from_selection(sel, config, catalog=catalog)
    assert repr(config) == before and config.exclude_target is None
    assert mix.manifest["config"]["exclude_target"] == "target_task" and mix.manifest["target"] == "target_task"
    assert mix.counts() == {"sentiment": 1, "arithmetic": 2}
