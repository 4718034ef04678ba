"""Training: causal/seq2seq features, loss goes down (full and LoRA), a trained model wins its rank
classification, checkpoints and resume, bad input, CLI. Tiny random-init models built offline."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.cli import main  # noqa: E402
from insta.errors import InstaError  # noqa: E402
from insta.evaluate import evaluate_task  # noqa: E402
from insta.train import TrainConfig, build_features, train_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


_one_thread = tiny_lm.one_torch_thread

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"causal": str(tiny_lm.build_causal(root / "llama")), "seq2seq": str(tiny_lm.build_t5(root / "t5"))}


def cfg(model, out, **kw):
    base = dict(model=model, output_dir=str(out), epochs=8, batch_size=8, learning_rate=1e-2, progress=False,
                save_steps=1000, logging_steps=4)
    base.update(kw)
    return TrainConfig(**base)


def test_causal_features_mask_prompt_and_append_eos():
    tok = tiny_lm.build_tokenizer()
    recs = [{"input": "Which group ? Q : a1 a2 A :", "target": "yes"}]
    (f,), stats = build_features(recs, tok, "causal", TrainConfig())
    toks = tok.convert_ids_to_tokens(f["input_ids"])
    assert toks[-2:] == ["yes", "</s>"]
    assert f["labels"][:-2] == [-100] * (len(toks) - 2)
    assert f["labels"][-2:] == f["input_ids"][-2:]
    assert stats["target_tokens_per_epoch"] == 2 and stats["n_truncated"] == 0
    # truncation: the prompt keeps its end, the target its start
    (g,), stats = build_features(recs, tok, "causal", TrainConfig(max_source_length=3, max_target_length=1))
    assert tok.convert_ids_to_tokens(g["input_ids"]) == ["a2", "A", ":", "yes"]
    assert g["labels"].count(-100) == 3 and stats["n_truncated"] == 1


def test_seq2seq_features():
    tok = tiny_lm.build_tokenizer(seq2seq=True)
    (f,), _ = build_features([{"input": "Q : a1 A :", "target": "yes"}], tok, "seq2seq", TrainConfig())
    assert tok.convert_ids_to_tokens(f["labels"]) == ["yes", "</s>"]
    assert tok.convert_ids_to_tokens(f["input_ids"])[-1] == "</s>"
    # a tokenizer without an EOS post-processor still gets EOS on the labels
    tok2 = tiny_lm.build_tokenizer(seq2seq=False)
    (f2,), _ = build_features([{"input": "Q : a1 A :", "target": "yes"}], tok2, "seq2seq", TrainConfig())
    assert tok2.convert_ids_to_tokens(f2["labels"]) == ["yes", "</s>"]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_trained_model_wins_its_rank_classification(models, tmp_path, kind):
    ev = tiny_lm.toy_examples(20, seed=1)
    before = evaluate_task(models[kind], ev, progress=False)
    res = train_model(tiny_lm.toy_records(64, seed=2), cfg(models[kind], tmp_path / "run"))
    m = res.metrics
    assert m["kind"] == kind and m["global_step"] == 64
    assert m["last_loss"] < 0.5 * m["first_loss"]
    assert m["tokens_seen"] > 0 and m["tokens_per_second"] > 0
    after = evaluate_task(res.model_dir, ev, progress=False)
    assert before["metrics"]["acc"] <= 0.75
    assert after["metrics"]["acc"] >= 0.9 and after["metrics"]["acc_norm_token"] >= 0.9
    assert after["metrics"]["gold_nll_per_token"] < before["metrics"]["gold_nll_per_token"]
    saved = json.loads(Path(tmp_path / "run" / "train_result.json").read_text())
    assert saved["metrics"]["global_step"] == 64
    assert json.loads(Path(res.model_dir, "insta_model.json").read_text())["kind"] == kind


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_lora_loss_goes_down_and_adapter_loads(models, tmp_path, kind):
    from insta.lm import load_model

    res = train_model(tiny_lm.toy_records(32, seed=3),
                      cfg(models[kind], tmp_path / "lora", lora=True, lora_r=4, epochs=6, learning_rate=2e-2))
    m = res.metrics
    assert m["lora"] and m["n_trainable"] < m["n_params"] / 2
    assert m["last_loss"] < m["first_loss"]
    assert Path(res.model_dir, "adapter_config.json").is_file()
    lm = load_model(res.model_dir)
    assert lm.adapter == res.model_dir and lm.kind == kind
    out = evaluate_task(lm, tiny_lm.toy_examples(6, seed=4), progress=False)
    assert out["adapter"] == res.model_dir


def test_merged_lora(models, tmp_path):
    res = train_model(tiny_lm.toy_records(16), cfg(models["causal"], tmp_path / "m", lora=True, merge_lora=True,
                                                   max_steps=2))
    assert Path(res.model_dir, "config.json").is_file()
    assert Path(tmp_path / "m" / "adapter" / "adapter_config.json").is_file()
    evaluate_task(res.model_dir, tiny_lm.toy_examples(4), progress=False)


def test_checkpoints_and_resume_after_interruption(models, tmp_path):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt

    config = cfg(models["causal"], tmp_path / "r", max_steps=8, save_steps=2, batch_size=4, logging_steps=1)
    recs = tiny_lm.toy_records(32)
    with pytest.raises(KeyboardInterrupt):
        train_model(recs, config, callbacks=[Interrupt()])
    ckpts = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert "checkpoint-4" in ckpts
    res = train_model(recs, cfg(models["causal"], tmp_path / "r", max_steps=8, save_steps=2, batch_size=4))
    assert res.metrics["resumed_from"].endswith("checkpoint-4")
    assert res.metrics["global_step"] == 8
    # a different run in the same folder is refused, unless overwriting
    with pytest.raises(InstaError, match="holds a different run"):
        train_model(recs, cfg(models["causal"], tmp_path / "r", max_steps=8, save_steps=2, batch_size=4, seed=1))
    res = train_model(recs, cfg(models["causal"], tmp_path / "r", max_steps=2, batch_size=4, overwrite=True))
    assert res.metrics["resumed_from"] is None and res.metrics["global_step"] == 2


def test_bad_inputs(models, tmp_path):
    with pytest.raises(InstaError, match="does not exist"):
        train_model(tmp_path / "missing.jsonl", cfg(models["causal"], tmp_path / "x"))
    with pytest.raises(InstaError, match="model directory .* does not exist"):
        train_model(tiny_lm.toy_records(2), cfg(str(tmp_path / "no-model"), tmp_path / "x"))
    with pytest.raises(InstaError, match="not a model directory"):
        train_model(tiny_lm.toy_records(2), cfg(str(tmp_path), tmp_path / "x"))
    with pytest.raises(InstaError, match="epochs or max steps"):
        train_model(tiny_lm.toy_records(2), cfg(models["causal"], tmp_path / "x", epochs=0))
    with pytest.raises(InstaError, match="unknown training option"):
        train_model(tiny_lm.toy_records(2), cfg(models["causal"], tmp_path / "x"), nope=1)
    with pytest.raises(InstaError, match="no example with a non-empty target"):
        train_model([{"input": "x", "target": " "}], cfg(models["causal"], tmp_path / "x"))


def test_cli_train(models, tmp_path, capsys):
    mix = tmp_path / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(8)))
    rc = main(["train", "--mixture", str(mix), "--model", models["causal"], "--out", str(tmp_path / "run"),
               "--max-steps", "2", "--batch-size", "4", "--lr", "1e-3", "--no-progress", "--seed", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 steps" in out and str(tmp_path / "run" / "model") in out
    rc = main(["train", "--mixture", str(tmp_path / "nope.jsonl"), "--model", models["causal"],
               "--out", str(tmp_path / "r2")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_run_directory_resolves_to_its_model(models, tmp_path):
    from insta.lm import resolve_model

    res = train_model(tiny_lm.toy_records(8), cfg(models["causal"], tmp_path / "run", max_steps=1))
    assert resolve_model(str(tmp_path / "run")) == res.model_dir


# ---------------------------------------------------------------- a kill while saving a checkpoint


def _interrupted_run(models, out, recs):
    """Train 8 steps with a checkpoint every 2, killed after step 7: checkpoint-4 and checkpoint-6 remain."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(recs, cfg(models["causal"], out, max_steps=8, save_steps=2, batch_size=4), callbacks=[Kill()])
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    return ckpts


def _damage(folder: Path, how: str) -> None:
    """What a kill in the middle of the Trainer's checkpoint save leaves behind."""
    import shutil

    if how == "empty folder":
        shutil.rmtree(folder)
        folder.mkdir()
    elif how == "weights only":  # killed right after the model was written
        for p in folder.iterdir():
            if p.name != "model.safetensors":
                p.unlink()
    elif how == "truncated weights":
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif how == "truncated optimizer":
        o = folder / "optimizer.pt"
        o.write_bytes(o.read_bytes()[:100])
    elif how == "corrupt trainer_state.json":
        (folder / "trainer_state.json").write_text('{"global_step": ')
    else:  # pragma: no cover
        raise ValueError(how)


@pytest.mark.parametrize("how", ["empty folder", "weights only", "truncated weights", "truncated optimizer",
                                 "corrupt trainer_state.json"])
def test_resume_skips_a_half_written_checkpoint(models, tmp_path, caplog, how):
    from insta.train import checkpoint_problem

    recs = tiny_lm.toy_records(32)
    ckpts = _interrupted_run(models, tmp_path / "r", recs)
    assert checkpoint_problem(ckpts / "checkpoint-6") is None
    _damage(ckpts / "checkpoint-6", how)
    assert checkpoint_problem(ckpts / "checkpoint-6") is not None
    caplog.clear()
    res = train_model(recs, cfg(models["causal"], tmp_path / "r", max_steps=8, save_steps=2, batch_size=4))
    assert res.metrics["resumed_from"].endswith("checkpoint-4")
    assert res.metrics["global_step"] == 8
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("insta.")]
    assert any("checkpoint-6 is incomplete" in m and "resuming from checkpoint-4" in m for m in warned)
    assert checkpoint_problem(ckpts / "checkpoint-6") is None  # written again, whole
    assert checkpoint_problem(ckpts / "checkpoint-8") is None


def test_resume_starts_over_when_no_checkpoint_is_complete(models, tmp_path, caplog):
    recs = tiny_lm.toy_records(32)
    ckpts = _interrupted_run(models, tmp_path / "r", recs)
    _damage(ckpts / "checkpoint-6", "empty folder")
    _damage(ckpts / "checkpoint-4", "truncated weights")
    caplog.clear()
    res = train_model(recs, cfg(models["causal"], tmp_path / "r", max_steps=8, save_steps=2, batch_size=4))
    assert res.metrics["resumed_from"] is None and res.metrics["global_step"] == 8
    assert any("starting over" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_cli_resumes_after_a_kill_while_saving(models, tmp_path, capsys):
    recs = tiny_lm.toy_records(32)
    ckpts = _interrupted_run(models, tmp_path / "r", recs)
    _damage(ckpts / "checkpoint-6", "truncated weights")
    mix = tmp_path / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in recs))
    capsys.readouterr()
    rc = main(["train", "--mixture", str(mix), "--model", models["causal"], "--out", str(tmp_path / "r"),
               "--max-steps", "8", "--save-steps", "2", "--batch-size", "4", "--epochs", "8", "--lr", "1e-2",
               "--logging-steps", "4", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "8 steps" in out.out and "resumed from" in out.out and "checkpoint-4" in out.out
    assert "Traceback" not in out.err


# ---------------------------------------------------------------- never write over a model insta did not write


def test_train_refuses_a_model_dir_it_did_not_write(models, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    foreign = out / "model"
    shutil.copytree(models["causal"], foreign)  # e.g. the user's own fine-tuned model
    (foreign / "NOTES.md").write_text("my model")
    before = {p.name: p.read_bytes() for p in foreign.iterdir()}
    mix = tmp_path / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(8)))
    argv = ["train", "--mixture", str(mix), "--model", models["causal"], "--out", str(out), "--max-steps", "1",
            "--batch-size", "4", "--no-progress"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("insta train: error: ") and "did not write" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in foreign.iterdir()} == before  # nothing lost
    assert not (out / "checkpoints").exists()
    with pytest.raises(InstaError, match="did not write"):
        train_model(tiny_lm.toy_records(8), cfg(models["causal"], out, max_steps=1))
    # asked for: replaced
    assert main(argv + ["--overwrite"]) == 0
    assert (foreign / "insta_model.json").is_file() and not (foreign / "NOTES.md").exists()
    # insta's own run directory is resumed, not refused
    assert main(argv) == 0
