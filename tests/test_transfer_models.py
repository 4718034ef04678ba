"""insta transfer with real (tiny, random-init) transformers models: sequential and Ray executors write the same
cells, seq2seq models work too. Marked slow: it trains a few tiny models and starts a local Ray instance."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.transfer import load_transfer_config, run_transfer  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning",
                                                           "ignore::DeprecationWarning")]
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "experiment" / "data"
_one_thread = tiny_lm.one_torch_thread


def cfg(tmp_path, model, out="out", **over):
    over = {"data_dir": str(DATA), "out": str(tmp_path / out), "backend": "transformers", "model": model,
            "sources.n": 2, "instances": 6, "eval.n": 4,
            "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-2, "progress": False, "save_steps": 1000,
                      "max_source_length": 64, "max_target_length": 8}, **over}
    return load_transfer_config(REPO / "configs" / "transfer-tiny.yaml", over)


def cells(out: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-transfer-models")
    return {"causal": str(tiny_lm.build_causal(root / "llama")), "seq2seq": str(tiny_lm.build_t5(root / "t5"))}


def test_ray_and_sequential_produce_the_same_cells(models, tmp_path):
    import ray
    seq = cfg(tmp_path, models["causal"], "seq")
    res = run_transfer(seq, log=lambda m: None, progress=False, report=False)
    assert res["complete"] and res["stats"]["trained"] == 4
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        par = cfg(tmp_path, models["causal"], "ray", executor="ray")
        res_ray = run_transfer(par, log=lambda m: None, progress=False, report=False)
        assert res_ray["complete"] and res_ray["stats"]["units_run"] == 5
        a, b = cells(tmp_path / "seq"), cells(tmp_path / "ray")
        assert set(a) == set(b)  # the same cell keys: a cluster run and a laptop run share a cache
        for name in a:
            assert a[name]["samples"]["ids"] == b[name]["samples"]["ids"]
            assert a[name]["samples"]["nll_per_token"] == pytest.approx(b[name]["samples"]["nll_per_token"],
                                                                        abs=1e-4)
        # the laptop run reuses the cluster's cells: nothing left to do
        again = run_transfer(cfg(tmp_path, models["causal"], "ray"), log=lambda m: None, progress=False,
                             report=False)
        assert again["stats"]["units_run"] == 0
    finally:
        ray.shutdown()


def test_experiment_grid_runs_on_the_same_executor(tmp_path):
    import ray

    from insta.engine import DryRunBackend
    from insta.experiment import load_config, run_experiment

    def grid(out, **over):
        return load_config(REPO / "configs" / "tiny.yaml", {"data_dir": str(DATA), "out": str(tmp_path / out),
                                                            **over})

    run_experiment(grid("seq"), log=lambda m: None, report=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_experiment(grid("ray", executor="ray"), log=lambda m: None, report=False)
    finally:
        ray.shutdown()
    assert not res["missing_cells"] and res["stats"]["trained"] > 0
    seq_cells = {p.name for p in (tmp_path / "seq" / "cells").glob("*.json")}
    assert seq_cells == {p.name for p in (tmp_path / "ray" / "cells").glob("*.json")}  # same cache keys
    b = DryRunBackend()
    run_experiment(grid("ray"), backend=b, log=lambda m: None, report=False)
    assert b.n_train == 0 and b.n_eval == 0  # the laptop reuses what the Ray run computed


def test_seq2seq_model(models, tmp_path):
    res = run_transfer(cfg(tmp_path, models["seq2seq"], seeds=[0]), log=lambda m: None, progress=False,
                       report=False)
    assert res["complete"] and res["stats"]["trained"] == 2
    rows = json.loads((tmp_path / "out" / "matrix.json").read_text())["rows"]
    assert {r["metric"] for r in rows} >= {"nll_per_token", "acc", "acc_norm", "acc_calibrated"}
