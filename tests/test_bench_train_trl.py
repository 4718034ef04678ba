"""The training benchmark's TRL side (benchmarks/trl_trainer.py) and its bookkeeping
(benchmarks/bench_train_throughput.py): TRL gets the examples as prompt/completion text that it tokenizes to insta's
ids, with the loss on the completion only and padding-free batches, in fp32 without gradient checkpointing; the
uniform mixture's length window and the model sizes behind the FLOP count. A tiny model built offline."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "train"))
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_train_throughput as bench  # noqa: E402
import tiny_lm  # noqa: E402
import trl_trainer  # noqa: E402

from insta.train import TrainConfig, build_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
RECORDS = [
    {"input": "Q: is it so?\nA:", "target": "yes"},
    {"input": "Q: and this one, which is a longer question about the words?\nA:", "target": "no"},  # truncated
    {"input": "Translate: cat", "target": "chat and more words"},  # the target truncated too
]


def test_trl_side_trains_insta_ids_completion_only_padding_free(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_lm.build_causal_bpe(tmp_path / "lm", [r["input"] + " " + r["target"] for r in RECORDS] * 5)
    tok = AutoTokenizer.from_pretrained(model_dir)
    feats, stats = build_features(RECORDS, tok, "causal", TrainConfig(max_source_length=12, max_target_length=4))
    assert stats["n_truncated"] == 2  # both paths of trl_records: insta's own export and decoded truncated ids
    rows = trl_trainer.trl_records(RECORDS, feats, tok)
    assert all(set(r) == {"prompt", "completion"} for r in rows)
    cfg = trl_trainer.sft_config(str(tmp_path / "out"), batch_size=3, max_steps=1)
    assert (cfg.completion_only_loss, cfg.padding_free, cfg.max_length) == (True, True, None)
    assert (cfg.bf16, cfg.gradient_checkpointing) == (False, False)  # TRL's defaults are True for both
    trainer = trl_trainer.build_trainer(rows, AutoModelForCausalLM.from_pretrained(model_dir), tok, cfg)

    # TRL tokenizes the text to insta's ids, EOS included, and masks exactly the prompt; where insta cut the
    # target (and its EOS), TRL still appends the EOS: one token more
    assert trl_trainer.same_as_features(trainer, feats) == 2
    for i, (row, f) in enumerate(zip(trainer.train_dataset, feats)):
        k = f["labels"].count(-100)
        extra = [tok.eos_token_id] if i == 2 else []
        assert row["input_ids"] == f["input_ids"] + extra and row["input_ids"][-1] == tok.eos_token_id
        assert row["labels"] == [-100] * k + f["input_ids"][k:] + extra

    # padding-free: the batch in one row, positions restarting per example, no attention mask, no padding
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    lengths = [len(row["input_ids"]) for row in trainer.train_dataset]
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(lengths))
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    labels = [x for row in trainer.train_dataset for x in row["labels"]]
    starts = [sum(lengths[:i]) for i in range(3)]
    assert batch["labels"][0].tolist() == [-100 if i in starts else x for i, x in enumerate(labels)]

    record = trl_trainer.timed_train(trainer)
    assert record["steps"] == 1 and record["train_loss"] > 0
    assert trainer._total_train_tokens == sum(lengths)  # the real tokens the benchmark reports


def test_uniform_window_and_flop_sizes(tmp_path):
    # the narrowest window of 3: [9, 10, 10] and [10, 10, 11] both span 1; the first (shortest lengths) wins
    assert bench.narrowest_window([5, 9, 10, 11, 30, 10], 3) == [1, 2, 5]
    with pytest.raises(ValueError):
        bench.narrowest_window([1, 2], 3)
    dims = bench.model_dims(str(tiny_lm.build_causal(tmp_path / "llama")))  # d 32, ff 64, 2 layers, tied head
    assert dims["n_body"] == 2 * (4 * 32 * 32 + 3 * 32 * 64)  # q, k, v, o and gate, up, down; not the head
    assert dims["n_head"] == 32 * dims["vocab"] and (dims["layers"], dims["d_attn"]) == (2, 32)
    # the LM head counts at target tokens only: a longer prompt adds body and attention FLOPs, never head FLOPs
    short, long = bench.example_flops(10, 2, dims), bench.example_flops(11, 2, dims)
    assert long - short == 6 * dims["n_body"] + 6 * 2 * 32 * (11 * 12 - 10 * 11)
