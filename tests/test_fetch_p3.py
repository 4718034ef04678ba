"""P3 instances through the datasets library (insta.fetch.p3), offline: the loader pointed at a local folder in
the hub dataset's own layout (tests/fixtures/p3_hub: README.md card + data/<config>/<split>-*.parquet)."""
import json
import shutil
from pathlib import Path

import pytest

from insta import cli
from insta.catalogs import load_catalog
from insta.errors import InstaError
from insta.fetch.p3 import (
    DEFAULT_MAX_ROWS,
    fetch_instances,
    output_file,
    p3_config_name,
    parse_card,
    plan_parts,
    read_card,
    resolve_tasks,
    size_estimate,
)

pytest.importorskip("datasets")

FIX = Path(__file__).parent / "fixtures"
HUB = str(FIX / "p3_hub")
TASKS = ["super_glue/rte", "imdb", "glue/qqp", "multi_qa"]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "promptsource").mkdir()
    shutil.copytree(FIX / "p3" / "promptsource" / "templates", tmp_path / "promptsource" / "templates")
    return tmp_path


def quiet(_msg):
    pass


def test_config_names_follow_p3():
    assert p3_config_name("super_glue", "rte", "GPT-3 style") == "super_glue_rte_GPT_3_style"
    assert p3_config_name("super_glue", "wsc.fixed", "does p stand for") == "super_glue_wsc.fixed_does_p_stand_for"
    assert p3_config_name("imdb", None, "Movie Expressed Sentiment 2") == "imdb_Movie_Expressed_Sentiment_2"
    assert p3_config_name("duorc", "SelfRC", "build_story_around_qa") == "duorc_SelfRC_build_story_around_qa"


def test_winogrande_is_fetched_from_its_xl_subset_only(data_dir):
    from insta.fetch.p3 import template_configs

    configs = template_configs(load_catalog("p3", data_dir).get("winogrande"))
    assert configs and all(c.startswith("winogrande_winogrande_xl_") for c in configs)
    anli = template_configs(load_catalog("p3", data_dir).get("anli"))
    assert anli and {c.rsplit("_", 1)[1] for c in anli} == {"r1", "r2", "r3"}


def test_card_sizes_and_plan(root):
    card = read_card(HUB)
    assert card["super_glue_rte_fact_supports_claim"]["splits"] == {"train": 3, "validation": 1}
    tasks = resolve_tasks(load_catalog("p3", root), TASKS)
    parts = plan_parts(tasks, card, ["train", "validation"])
    configs = {p.config for p in parts}
    # every template of the chosen tasks that the card holds; never the score_eval copy or a foreign config
    assert configs == {"super_glue_rte_fact_supports_claim", "super_glue_rte_statement_true_or_false",
                       "imdb_positive_or_negative", "glue_qqp_same_thing", "multi_qa_sub_a_answer_from_passage",
                       "multi_qa_sub_b_titled_passage"}
    est = size_estimate(parts, None)
    assert est["rows"] == 3 + 1 + 3 + 1 + 4 + 1 + 1 + 1
    assert est["files"] == 5 and est["tasks"] == 4
    assert size_estimate(parts, 2)["rows"] == 2 + 1 + 2 + 1 + 2 + 1 + 1 + 1
    total = sum(card[c]["download_size"] for c in configs)
    assert total - len(parts) <= est["download_bytes"] <= total


def test_card_without_header_is_one_error():
    with pytest.raises(InstaError, match="no YAML header"):
        parse_card("just text")
    with pytest.raises(InstaError, match="lists no configs"):
        parse_card("---\npretty_name: x\n---\n")


def test_fetch_writes_the_catalog_layout_and_the_catalog_reads_it(root):
    lines = []
    res = fetch_instances(root, HUB, TASKS, splits=["train", "validation"], log=lines.append, progress=False)
    assert "15 rows" in lines[0] and "6 configs of 4 tasks -> 5 files" in lines[0]
    assert sorted((w["task"], w["split"], w["rows"]) for w in res["written"]) == [
        ("glue/qqp", "train", 1), ("imdb", "train", 4), ("multi_qa", "train", 2), ("super_glue/rte", "train", 6),
        ("super_glue/rte", "val", 2)]
    rows = [json.loads(line) for line in output_file(root, "super_glue/rte", "val").read_text().splitlines()]
    assert {r["p3_config"] for r in rows} == {"super_glue_rte_fact_supports_claim",
                                             "super_glue_rte_statement_true_or_false"}
    assert all("inputs" not in r and "targets" not in r for r in rows)  # token ids are not copied
    train = load_catalog("p3", root, split="train")
    rte = list(train.get("super_glue/rte").iter_examples())
    assert len(rte) == 6 and len({ex.id for ex in rte}) == 6
    first = rte[0]
    assert first.input.startswith("Fact: Rain fell all night.") and first.references == ["Yes"]
    assert first.options == ["Yes", "No"] and first.label == 0
    assert first.provenance["template_id"] == "dddd0001-0000-0000-0000-000000000001"
    assert [ex.label for ex in rte[3:]] == [0, 1, 0]  # True / False / True of the second template
    qa = list(train.get("multi_qa").iter_examples())
    assert [ex.references for ex in qa] == [["blue"], ["purr"]] and all(ex.options is None for ex in qa)
    val = load_catalog("p3", root, split="val")
    assert [ex.references[0] for ex in val.get("super_glue/rte").iter_examples()] == ["No", "False"]


def test_resume_skips_finished_files_and_redoes_partial_ones(root):
    fetch_instances(root, HUB, ["imdb"], splits=["train"], log=quiet, progress=False)
    done = output_file(root, "imdb", "train")
    before = done.read_text()
    calls = []

    def reader(source, config, split):
        calls.append(config)
        raise AssertionError("a finished file is not fetched again")

    lines = []
    res = fetch_instances(root, HUB, ["imdb", "glue/qqp"], splits=["train"], log=lines.append, progress=False,
                          rows_reader=_failing_after(1))
    assert done.read_text() == before and res["skipped"] == ["imdb/train"]  # untouched
    assert res["written"][0]["task"] == "glue/qqp"
    # an interrupted file: the run dies after one row; nothing looks finished, the next run completes it
    target = output_file(root, "super_glue/rte", "train")
    with pytest.raises(RuntimeError):
        fetch_instances(root, HUB, ["super_glue/rte"], splits=["train"], log=quiet, progress=False,
                        rows_reader=_failing_after(1, fail=True))
    assert not target.exists() and target.with_name("train.jsonl.partial").exists()
    assert not load_catalog("p3", root, split="train").get("super_glue/rte").has_examples
    fetch_instances(root, HUB, ["super_glue/rte"], splits=["train"], log=quiet, progress=False)
    assert len(target.read_text().splitlines()) == 6
    fetch_instances(root, HUB, ["super_glue/rte"], splits=["train"], log=lines.append, progress=False,
                    rows_reader=reader)
    assert not calls and "nothing to fetch" in lines[-1]


def _failing_after(n, fail=False):
    from insta.fetch.p3 import _rows

    def reader(source, config, split):
        for i, row in enumerate(_rows(source, config, split)):
            if fail and i >= n:
                raise RuntimeError("connection lost")
            yield row
    return reader


def test_max_rows_caps_each_config_split(root):
    res = fetch_instances(root, HUB, ["super_glue/rte"], splits=["train"], max_rows=2, log=quiet, progress=False)
    assert res["written"][0]["rows"] == 4 and DEFAULT_MAX_ROWS == 50_000


def test_bad_requests_are_one_line(root):
    with pytest.raises(InstaError, match="unknown"):
        fetch_instances(root, HUB, ["no_such_dataset"], log=quiet, progress=False)
    with pytest.raises(InstaError, match="unknown P3 split"):
        fetch_instances(root, HUB, ["imdb"], splits=["dev"], log=quiet, progress=False)
    with pytest.raises(InstaError, match="holds no config"):
        fetch_instances(root, HUB, ["toy_nli"], log=quiet, progress=False)
    with pytest.raises(InstaError, match="no README.md"):
        fetch_instances(root, str(root), ["imdb"], log=quiet, progress=False)


def test_malformed_prerendered_row_is_one_error(root):
    out = output_file(root, "imdb", "train")
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"inputs_pretokenized": "x", "targets_pretokenized": 3}) + "\n")
    with pytest.raises(InstaError, match="malformed P3 row"):
        list(load_catalog("p3", root, split="train").get("imdb").iter_examples())


def test_cli_fetch_instances(root, capsys):
    code = cli.main(["data", "fetch", "p3", "--instances", "--source", HUB, "--tasks", "imdb,qqp",
                     "--splits", "train", "--data-dir", str(root), "--json", "-"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(w["task"] for w in out["instances"]["written"]) == ["glue/qqp", "imdb"]  # T0 name qqp resolved
    assert cli.main(["data", "fetch", "bigbench", "--instances", "--data-dir", str(root)]) == 2
    assert "p3 only" in capsys.readouterr().err
    assert cli.main(["data", "fetch", "p3", "--tasks", "imdb", "--data-dir", str(root)]) == 2
    assert "go with --instances" in capsys.readouterr().err
