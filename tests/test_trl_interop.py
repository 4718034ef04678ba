"""Training interop: mixtures in TRL's prompt/completion format (read back by insta, by ``datasets`` and by TRL's
SFTTrainer with the loss on the completion tokens insta trains on), and --report-to / --deepspeed / --fsdp /
--fsdp-config passed through to transformers' TrainingArguments (no GPU needed: the arguments are recorded)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.cli import main  # noqa: E402
from insta.errors import InstaError  # noqa: E402
from insta.lm import encode_causal  # noqa: E402
from insta.mixture import Mixture, export_record, join_prompt_target, read_mixture  # noqa: E402
from insta.train import TrainConfig, trainer_passthrough  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
_one_thread = tiny_lm.one_torch_thread
RECORDS = [
    {"id": "a", "task": "t", "input": "Q: is it so?\nA:", "target": "yes"},
    {"id": "b", "task": "t", "input": "Q: and this?\nA: ", "target": "no"},  # the prompt ends in a space
    {"id": "c", "task": "t", "input": "Translate: cat", "target": " chat"},  # the target starts with one
]


def write_trl(tmp_path) -> Path:
    path = Mixture([dict(r) for r in RECORDS], {}).write(tmp_path / "mix.jsonl", fmt="trl")
    return path


def test_trl_records_are_insta_text_and_read_back(tmp_path):
    path = write_trl(tmp_path)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert set(rows[0]) == {"prompt", "completion", "task", "id"}
    for row, rec in zip(rows, RECORDS):
        assert row["prompt"] + row["completion"] == "".join(join_prompt_target(rec["input"], rec["target"]))
    assert [r["completion"] for r in rows] == [" yes", "no", " chat"]
    back = read_mixture(path)  # insta train reads TRL mixtures too: the same training text
    for b, rec in zip(back, RECORDS):
        assert "".join(join_prompt_target(b["input"], b["target"])) == "".join(
            join_prompt_target(rec["input"], rec["target"]))
    import datasets

    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ["prompt", "completion", "task", "id"] and ds[1]["completion"] == "no"
    with pytest.raises(InstaError, match="must be strings"):
        from insta.mixture import normalize_record

        normalize_record({"prompt": [{"role": "user", "content": "x"}], "completion": "y"}, "row")


def test_trl_sfttrainer_trains_on_the_completion_insta_masks(tmp_path, monkeypatch):
    """TRL's SFTTrainer reads the file, tokenizes it as insta does (EOS included, the boundary merge of a prompt
    ending in a space too) and masks exactly the prompt tokens insta masks, then takes a training step."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_trl(tmp_path)
    model_dir = tiny_lm.build_causal_bpe(tmp_path / "lm", [r["input"] + " " + r["target"] for r in RECORDS] * 5)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    cfg = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=3, report_to="none",
                    use_cpu=True, completion_only_loss=True, logging_steps=1, save_strategy="no",
                    dataset_num_proc=None, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=cfg, train_dataset=ds,
                         processing_class=tok)
    for row, rec in zip(trainer.train_dataset, RECORDS):
        ids, k = encode_causal(tok, rec["input"], rec["target"], add_eos=True)
        assert row["input_ids"] == ids  # the same tokens, EOS appended as insta does
        # the loss on what insta trains on (TRL >= 1 builds labels; earlier versions a completion mask)
        if "labels" in row:
            assert row["labels"] == [-100] * k + ids[k:]
        else:
            assert row["completion_mask"] == [0] * k + [1] * (len(ids) - k)
    out = trainer.train()
    assert trainer.state.global_step == 1 and out.training_loss > 0


def test_mixture_cli_writes_trl(tmp_path):
    user = Path(__file__).parent / "fixtures" / "user" / "tasks.yaml"
    out = tmp_path / "m.jsonl"
    assert main(["mixture", "--tasks", "review_sentiment", "--catalog", str(user), "--per-task", "2",
                 "--out", str(out), "--format", "trl", "-q"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and all(set(r) == {"prompt", "completion", "task", "id"} for r in rows)
    assert export_record(RECORDS[0], "trl")["completion"] == " yes"


def test_trainer_arguments_pass_through(tmp_path, monkeypatch):
    import transformers

    seen = {}

    class Stop(Exception):
        pass

    class Recording(transformers.TrainingArguments):
        def __init__(self, **kw):
            seen.update(kw)
            raise Stop

    monkeypatch.setattr(transformers, "TrainingArguments", Recording)
    model = tiny_lm.build_causal(tmp_path / "tiny")
    mix = tmp_path / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(4)))
    common = ["train", "--mixture", str(mix), "--model", str(model), "--out", str(tmp_path / "run"), "-q"]
    with pytest.raises(Stop):
        main(common)
    assert seen["report_to"] == "none"  # the default: no tracker
    assert "deepspeed" not in seen and "fsdp" not in seen
    ds_cfg, fsdp_cfg = tmp_path / "ds.json", tmp_path / "fsdp.json"
    ds_cfg.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    fsdp_cfg.write_text(json.dumps({"min_num_params": 1000}))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # as if deepspeed and wandb were installed
                        lambda name, *a: object() if name in ("deepspeed", "wandb") else real_find_spec(name, *a))
    seen.clear()
    with pytest.raises(Stop):
        main(common + ["--report-to", "wandb", "--deepspeed", str(ds_cfg), "--fsdp", "full_shard auto_wrap",
                       "--fsdp-config", str(fsdp_cfg)])
    assert seen["report_to"] == ["wandb"] and seen["deepspeed"] == str(ds_cfg)
    assert seen["fsdp"] == "full_shard auto_wrap" and seen["fsdp_config"] == str(fsdp_cfg)
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)


def test_missing_integrations_and_files_are_one_line(tmp_path, capsys):
    def cfg(**kw):
        return TrainConfig(output_dir=str(tmp_path), **kw)

    if importlib.util.find_spec("deepspeed") is None:
        (tmp_path / "ds.json").write_text("{}")
        with pytest.raises(InstaError, match="pip install deepspeed"):
            trainer_passthrough(cfg(deepspeed=str(tmp_path / "ds.json")))
    if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        with pytest.raises(InstaError, match="pip install tensorboard"):
            trainer_passthrough(cfg(report_to="tensorboard"))
    with pytest.raises(InstaError, match="does not exist"):
        trainer_passthrough(cfg(deepspeed=str(tmp_path / "nope.json")))
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(InstaError, match="needs --fsdp"):
        trainer_passthrough(cfg(fsdp_config=str(tmp_path / "f.json")))
    assert trainer_passthrough(cfg(report_to="none, ")) == {"report_to": "none"}
    rc = main(["train", "--mixture", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r"), "--deepspeed",
               str(tmp_path / "nope.json")])
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
