"""Selection on the real promptsource templates with the real all-MiniLM-L6-v2 encoder."""
import json
import subprocess
import sys

import pytest

from insta.catalogs import load_catalog
from insta.catalogs.base import Catalog
from insta.encoder import Encoder
from insta.records import Task
from insta.methods import Selector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def p3(request):
    from conftest import shared_data_dir

    return load_catalog("p3", shared_data_dir())


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return Encoder(cache_root=tmp_path_factory.mktemp("emb"))


def test_held_out_instruction_finds_its_own_dataset(p3, encoder):
    """Leave one template out of its dataset: its own dataset should rank first for most datasets."""
    eligible = [t for t in p3 if len(t.instructions) >= 3 and t.language == "en"]
    assert len(eligible) > 100
    hits = 0
    for task in eligible:
        held = task.instructions[0]
        rest = Task(id=task.id, instructions=task.instructions[1:], catalog="p3")
        catalog = Catalog("p3-loo", [rest if t.id == task.id else t for t in p3])
        top = Selector(catalog, encoder, "mean").select([held], k=1)
        hits += top.task_ids[0] == task.id
    rate = hits / len(eligible)
    print(f"held-out instruction ranks its own dataset first: {hits}/{len(eligible)} = {rate:.3f}")
    assert rate > 0.5


def test_rte_selection_from_t0_pool(p3, encoder):
    pool = p3.subset(p3.pool("t0_train"))
    assert len(pool) == 35
    rte = p3.get("super_glue/rte")
    res = Selector(pool, encoder, "mean").select(rte.instructions, k=5)
    assert len(res.task_ids) == 5 and len(set(res.task_ids)) == 5
    assert set(res.task_ids) <= set(pool.ids)
    # RTE's templates ask whether a hypothesis follows from a premise: paraphrase-style pair tasks are related
    assert {"paws", "glue/mrpc", "glue/qqp"} & set(res.task_ids)


def test_cli_select_json_and_cache(tmp_path):
    from conftest import shared_data_dir

    env_json = tmp_path / "sel.json"
    cmd = [sys.executable, "-m", "insta.cli", "select", "--catalog", "p3", "--pool", "t0_train", "--data-dir",
           str(shared_data_dir()), "-i", "Is this movie review positive or negative?", "-k", "3",
           "--json", str(env_json)]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    data = json.loads(env_json.read_text())
    assert data["k"] == 3 and "text(s) encoded" in first.stderr and " 0 text(s) encoded" not in first.stderr
    assert {"imdb", "rotten_tomatoes", "amazon_polarity", "yelp_review_full", "app_reviews"} & set(
        s["task"] for s in data["selected"][:3])
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 0
    assert " 0 text(s) encoded" in second.stderr  # everything from the cache
    assert json.loads(env_json.read_text()) == data  # and the same selection file (no timings in it)
    assert "why" in first.stdout


@pytest.mark.parametrize("argv, message", [
    (["--task", "no_such_task"], "unknown task"),
    (["-i", "   "], "no instruction"),
    (["-i", "classify", "-k", "99"], "larger than the pool"),
    (["-i", "classify", "--encoder", "/nonexistent/encoder"], "does not exist"),
    (["-i", "classify", "--data-dir", "/nonexistent/data"], "does not exist"),
])
def test_cli_bad_input_is_one_line(argv, message):
    from conftest import shared_data_dir

    cmd = [sys.executable, "-m", "insta.cli", "select", "--catalog", "p3", "--pool", "t0_train"]
    if "--data-dir" not in argv:
        cmd += ["--data-dir", str(shared_data_dir())]
    proc = subprocess.run(cmd + argv, capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
