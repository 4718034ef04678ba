"""The CUDA check (insta.gpu_check, scripts/gpu_check.sh): the comparison logic on hand-written numbers, the CPU
side on a tiny model, and the GPU comparison itself where a GPU exists (skipped with one line elsewhere)."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from insta import gpu_check
from insta.errors import InstaError
from insta.gpu_check import TOLERANCES, compare, describe

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "train"))
import tiny_lm  # noqa: E402

torch = pytest.importorskip("torch")
CPU = {"dtype": "fp32", "losses": [2.0, 1.5, 1.0, 0.8],
       "loglik_base": [[-1.0, -3.0], [-4.0, -2.0], [-1.5, -1.6], [-10.0, -12.0]],
       "loglik_trained": [[-0.5, -4.0], [-5.0, -1.0], [-1.2, -2.0], [-9.0, -13.0]]}


def _by_name(result, word):
    return [c for c in result["checks"] if word in c["name"]]


def test_identical_sides_pass():
    res = compare(CPU, copy.deepcopy(CPU))
    assert res["ok"] and all(c["max_diff"] == 0 for c in res["checks"])
    assert describe(res)[0].startswith("gpu_check: PASS")


def test_each_tolerance_can_fail():
    gpu = copy.deepcopy(CPU)
    limit = TOLERANCES["loss_abs"] + TOLERANCES["loss_rel"] * 1.0  # 0.10 nats at a CPU loss of 1.0
    gpu["losses"][2] = 1.0 + limit + 0.01
    res = compare(CPU, gpu)
    assert not res["ok"] and [c["ok"] for c in _by_name(res, "training loss")] == [False]
    assert res["checks"][0]["max_diff"] == pytest.approx(0.11)
    gpu["losses"][2] = 1.0 + limit - 0.01
    assert compare(CPU, gpu)["ok"]

    gpu = copy.deepcopy(CPU)
    gpu["loglik_trained"][0][1] = -4.0 - 0.46  # limit there: 0.25 + 5% of 4.0 = 0.45 nats
    res = compare(CPU, gpu)
    assert [c["ok"] for c in _by_name(res, "log-likelihood")] == [True, False]
    gpu["loglik_trained"][0][1] = -4.0 - 0.44
    assert compare(CPU, gpu)["ok"]

    gpu = copy.deepcopy(CPU)
    gpu["loglik_base"][2] = [-1.7, -1.6]  # within 0.25 nats, but the prediction flips on 1 of 4 examples
    res = compare(CPU, gpu)
    assert [c["ok"] for c in _by_name(res, "same predicted option")] == [False, True]
    assert "FAIL" in describe(res)[0]


def test_mismatched_sides_are_one_error():
    gpu = copy.deepcopy(CPU)
    gpu["losses"] = gpu["losses"][:3]
    with pytest.raises(InstaError, match="same steps"):
        compare(CPU, gpu)
    gpu = copy.deepcopy(CPU)
    gpu["loglik_base"][0] = [-1.0]
    with pytest.raises(InstaError, match="different examples or options"):
        compare(CPU, gpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cpu_side_on_a_tiny_model_is_reproducible_and_sensitive(tmp_path):
    model = str(tiny_lm.build_causal(tmp_path / "tiny", seed=0))
    a = gpu_check.run_side(model, "cpu", tmp_path / "a", steps=3)
    b = gpu_check.run_side(model, "cpu", tmp_path / "b", steps=3)
    assert len(a["losses"]) == 3 and len(a["loglik_base"]) == 8 and all(len(x) == 2 for x in a["loglik_base"])
    assert a["loglik_base"] != a["loglik_trained"]  # the steps changed the model
    assert compare(a, b)["ok"]
    other = str(tiny_lm.build_causal(tmp_path / "other", seed=5))  # a different model: not "the same run"
    assert not compare(a, gpu_check.run_side(other, "cpu", tmp_path / "c", steps=3))["ok"]
    with pytest.raises(InstaError, match="no CUDA device"):
        gpu_check.run_side(model, "cuda", tmp_path / "d")


def test_cli_compare_and_exit_codes(tmp_path, capsys):
    (tmp_path / "cpu.json").write_text(json.dumps(CPU))
    bad = copy.deepcopy(CPU)
    bad["losses"] = [x * 1.5 for x in bad["losses"]]
    (tmp_path / "gpu.json").write_text(json.dumps(bad))
    assert gpu_check.main(["compare", str(tmp_path / "cpu.json"), str(tmp_path / "cpu.json")]) == 0
    assert gpu_check.main(["compare", str(tmp_path / "cpu.json"), str(tmp_path / "gpu.json"),
                           "--out", str(tmp_path / "cmp.json")]) == 1
    assert json.loads((tmp_path / "cmp.json").read_text())["ok"] is False
    assert gpu_check.main(["compare", str(tmp_path / "cpu.json"), str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script runs the real check")
def test_script_skips_in_one_line_without_a_gpu():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "gpu_check: skipped: no CUDA device here (torch.cuda.is_available() is false)"


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_bf16_matches_cpu_fp32(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "smollm2", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "compare.json").read_text())["ok"]
