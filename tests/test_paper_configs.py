"""The paper's four settings (configs/paper-*.yaml): ``--plan`` of each with the data this machine lacks named in
one line and a one-GPU cost from FLOPs measured on the meta device; each end to end on the parts whose data exist
(real templates and targets, pool instances from the offline P3 hub fixture or the NIV2 fixture tasks)."""
import json
import sys
from pathlib import Path

import pytest

from insta import cli
from insta.errors import InstaError
from insta.experiment import load_config
from insta.experiment.gpu_cost import (
    EVAL_UTILISATION,
    H100_BF16_PEAK,
    TRAIN_UTILISATION,
    check_data,
    grid_counts,
    measured_flops,
)

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
sys.path.insert(0, str(FIX / "train"))
import tiny_lm  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("datasets")

# name: (targets, cells, models to train, fetch command of the missing data)
EXPECT = {
    "paper-p3": (9, 63, 22, "insta data fetch p3 --instances"),
    "paper-bigbench": (20, 140, 44, "insta data fetch p3 --instances"),
    "paper-niv2": (33, 231, 70, "insta data fetch niv2"),
    "paper-bbh": (23, 161, 50, "insta data fetch niv2"),
}


@pytest.fixture(scope="module")
def here(tmp_path_factory):
    """This machine's data as a data folder: P3 templates, SuperGLUE, BIG-bench, BBH, NIV2 split lists; no P3
    instances and no NIV2 task files."""
    from conftest import shared_data_dir

    real = shared_data_dir()
    if not (real / "promptsource").is_dir():
        pytest.skip(f"real data not found at {real}")
    root = tmp_path_factory.mktemp("here")
    for sub in ("promptsource", "superglue", "big-bench", "bbh"):
        (root / sub).symlink_to(real / sub)
    (root / "natural-instructions").mkdir()
    (root / "natural-instructions" / "splits").symlink_to(real / "natural-instructions" / "splits")
    return root


@pytest.fixture(scope="module")
def runnable(here, tmp_path_factory):
    """``here`` plus P3 instances of three T0 training datasets fetched from the hub fixture, and three NIV2
    fixture tasks (two English training tasks, one test task)."""
    from insta.fetch.p3 import fetch_instances

    root = tmp_path_factory.mktemp("runnable")
    for sub in ("promptsource", "superglue", "big-bench", "bbh"):
        (root / sub).symlink_to(here / sub)
    fetch_instances(root, str(FIX / "p3_hub"), ["imdb", "ag_news", "mrpc"], splits=["train"],
                    log=lambda m: None, progress=False)
    ni = root / "natural-instructions"
    (ni / "tasks").mkdir(parents=True)
    (ni / "splits" / "default").mkdir(parents=True)
    for f in (FIX / "niv2" / "natural-instructions" / "tasks").glob("task90[123]_*.json"):
        (ni / "tasks" / f.name).symlink_to(f)
    (ni / "splits" / "default" / "train_tasks.txt").write_text("task902_toy_title_generation\n"
                                                               "task903_toy_word_analogy\n")
    (ni / "splits" / "default" / "test_tasks.txt").write_text("task901_toy_answerability\n")
    return root


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_plan_of_each_paper_config(name, here, tmp_path, capsys):
    n_targets, cells, models, fetch = EXPECT[name]
    argv = ["experiment", str(REPO / "configs" / f"{name}.yaml"), "--plan", "--data-dir", str(here),
            "--out", str(tmp_path / "out")]
    assert cli.main(argv + ["--json", "-"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["grid"] == {"targets": n_targets, "columns": 7, "cells": cells, "models": models}
    assert plan["missing"].startswith("missing data: ") and plan["missing"].endswith(fetch)
    assert "\n" not in plan["missing"]
    cost = plan["cost"]
    assert 1.70e9 < cost["params"] < 1.72e9  # SmolLM2-1.7B, counted on the meta device
    assert cost["forward_flops_per_token"] > 2 * cost["params"]  # + attention
    hours = cost["train_flops"] / (H100_BF16_PEAK * TRAIN_UTILISATION) / 3600
    assert cost["gpu_hours_train"] == pytest.approx(hours, abs=0.01)
    assert cost["eval_flops"] / (H100_BF16_PEAK * EVAL_UTILISATION) / 3600 == pytest.approx(cost["gpu_hours_eval"],
                                                                                            abs=0.01)
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cost["train_tokens"] == pytest.approx(models * cfg.n_total * cfg.train.epochs
                                                 * cost["train_tokens_per_instance"], rel=1e-6)
    assert not (tmp_path / "out").exists()  # a plan without data trains, selects and writes nothing
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("missing data: ") for line in lines) == 1
    assert any("GPU-hours" in line for line in lines)


def test_p3_plan_names_the_targets_it_has(here):
    check = check_data(load_config(REPO / "configs" / "paper-p3.yaml", {"data_dir": str(here)}))
    # RTE and WSC are read from the official SuperGLUE files; the other targets and the whole pool need P3
    assert check.targets_with_data == ["p3:super_glue/rte", "p3:super_glue/wsc.fixed"]
    assert len(check.pool_tasks) == 35 and check.pool_with_data == []


def test_a_run_without_the_data_stops_in_one_line(here, tmp_path, capsys):
    argv = ["experiment", str(REPO / "configs" / "paper-bbh.yaml"), "--data-dir", str(here), "--dry-run",
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing data" in err[0] and "insta data fetch niv2" in err[0]
    argv = ["experiment", str(REPO / "configs" / "paper-p3.yaml"), "--data-dir", str(here), "--dry-run",
            "--out", str(tmp_path / "out"), "--available-only"]
    assert cli.main(argv) == 2  # RTE and WSC remain, but no pool task has instances
    assert "k = 5 needs 5 pool tasks" in capsys.readouterr().err


def test_grid_counts_follow_the_methods():
    cfg = load_config(REPO / "configs" / "paper-p3.yaml", {"targets": ["p3:super_glue/rte", "p3:super_glue/cb"]},
                      only_methods=["insta", "all"])
    assert grid_counts(cfg) == {"targets": 2, "columns": 3, "cells": 6, "models": 3}


def test_flops_per_token_of_a_tiny_llama_by_hand(tmp_path):
    path = tiny_lm.build_causal(tmp_path / "llama")
    cfg = json.loads((path / "config.json").read_text())
    h, inter, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    seq = 16
    got = measured_flops(str(path), seq)
    linear = layers * (4 * h * h + 3 * h * inter) + vocab * h  # q, k, v, o, gate, up, down, LM head
    attention = layers * 4 * seq * h  # QK^T and AV over the full sequence, per token
    assert got["forward_flops_per_token"] == 2 * linear + attention
    embed = vocab * h  # tied with the LM head
    assert got["params"] == embed + layers * (4 * h * h + 3 * h * inter + 2 * h) + h


def test_unknown_model_cost_is_one_line():
    with pytest.raises(InstaError, match="known architectures"):
        measured_flops("some-org/not-a-known-model", 8)


END_TO_END = {  # config: (target, k)
    "paper-p3": ("p3:super_glue/rte", 2),
    "paper-bigbench": ("bigbench:novel_concepts", 2),
    "paper-niv2": ("niv2:task901_toy_answerability", 2),
    "paper-bbh": ("bbh:navigate", 2),
}


@pytest.mark.parametrize("name", sorted(END_TO_END))
def test_each_setting_end_to_end_on_the_data_present(name, runnable, tmp_path, capsys):
    """The dry-run backend (no model): selection, mixture, the grid's cells and the report of each setting."""
    target, k = END_TO_END[name]
    out = tmp_path / "out"
    argv = ["experiment", str(REPO / "configs" / f"{name}.yaml"), "--data-dir", str(runnable), "--targets", target,
            "--k", str(k), "--n-total", "12", "--n-eval", "8", "--encoder", "hashing", "--methods",
            "insta,all,random", "--dry-run", "--out", str(out), "--json", "-"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    results = json.loads((out / "results.json").read_text())
    primary = {"paper-p3": "acc", "paper-bigbench": "acc", "paper-niv2": "rouge_l", "paper-bbh": "exact_match"}[name]
    assert set(summary["primary"].values()) == {primary}
    assert {c["label"] for c in results["cells"]} == {"base", "insta", "all", "random-s0", "random-s1", "random-s2"}
    sel = next(c for c in results["plan"] if c["label"] == "insta")["selected"]
    pool = {"paper-p3": {"imdb", "ag_news", "glue/mrpc"}, "paper-bigbench": {"imdb", "ag_news", "glue/mrpc"},
            "paper-niv2": {"task902_toy_title_generation", "task903_toy_word_analogy"},
            "paper-bbh": {"task902_toy_title_generation", "task903_toy_word_analogy"}}[name]
    assert len(sel) == k and set(sel) <= pool
    if primary in ("rouge_l", "exact_match"):  # generation, as the setting asks, though the BBH task has options
        samples = next(iter(results["samples"].values()))
        assert all(v is not None for v in samples[primary])


@pytest.mark.slow
def test_paper_p3_trains_and_evaluates_a_real_model(runnable, tmp_path, capsys):
    """The transformers backend with a tiny random-init model on CPU: the setting's training options (bf16 only on
    a GPU) and rank classification, with --available-only dropping the targets without instances."""
    model = tiny_lm.build_causal(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["experiment", str(REPO / "configs" / "paper-p3.yaml"), "--data-dir", str(runnable),
            "--targets", "p3:super_glue/rte,p3:super_glue/cb", "--available-only", "--model", str(model),
            "--k", "2", "--n-total", "8", "--n-eval", "4", "--encoder", "hashing", "--methods", "insta,all",
            "--out", str(out), "--json", "-"]
    pytest.importorskip("transformers")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the CPU path; scripts/gpu_check.sh checks the GPU")
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "left out: p3:super_glue/cb" in captured.err
    results = json.loads((out / "results.json").read_text())
    assert [t["id"] for t in results["targets"]] == ["p3:super_glue/rte"]
    assert len(results["cells"]) == 3
    for samples in results["samples"].values():  # rank classification of 4 RTE examples, every option scored
        assert len(samples["ids"]) == 4 and all(p is not None for p in samples["pred_sum"])
        assert all(lp < 0 for lp in samples["gold_logprob"])
