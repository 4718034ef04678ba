"""Training batches (insta.train.collate): padding-free packing gives the padded batch's loss and gradients, the
target-only loss equals the full-logits loss, length-grouped batches keep every example once per epoch, tokens
are counted for the batches trained on only (also with --max-steps), LoRA and seq2seq train with the new
batching. Tiny random-init models built offline; SmolLM2 in the slow test."""
import json
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "train"))
import tiny_lm  # noqa: E402

from insta.train.collate import (  # noqa: E402
    TOKENS_KEY,
    LengthGroupedSampler,
    PackedCausalCollator,
    PaddedCausalCollator,
    balanced_rows,
    check_packing,
    target_only_loss,
)
from insta.train import TrainConfig, build_features, train_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

_one_thread = tiny_lm.one_torch_thread
REAL_CACHE = os.environ.get("INSTA_CACHE_DIR") or str(Path.home() / ".cache" / "insta")  # before conftest's own


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"causal": str(tiny_lm.build_causal(root / "llama")), "seq2seq": str(tiny_lm.build_t5(root / "t5"))}


def varied_records(n: int, seed: int = 0) -> list[dict]:
    """Toy records of different lengths (1-8 prompt words; one- or three-word targets)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = i % 2 == 0
        words = [rng.choice(tiny_lm.WORDS_A if a else tiny_lm.WORDS_B) for _ in range(rng.randint(1, 8))]
        target = ("yes" if a else "no") + (" the answer" if rng.random() < 0.3 else "")
        out.append({"input": "Which group ? Q : " + " ".join(words) + " A :", "target": target})
    return out


def features(n: int = 6, seed: int = 0) -> list[dict]:
    feats, _ = build_features(varied_records(n, seed), tiny_lm.build_tokenizer(), "causal", TrainConfig())
    return feats


def load_llama(path: str, attn: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = False
    return model


def loss_and_grads(model, batch, fn):
    model.zero_grad(set_to_none=True)
    loss = fn(model, {k: v for k, v in batch.items() if k != TOKENS_KEY})
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _hf_loss(model, batch):
    return model(**batch).loss


def _target_loss(model, batch):
    return target_only_loss(model, batch)[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("row_tokens", [512, 20])  # one row; several balanced rows with a padding tail
def test_padding_free_loss_and_gradients_equal_the_padded_batch(models, attn, row_tokens):
    import torch

    model = load_llama(models["causal"], attn)
    feats = features(6)
    assert len({len(f["input_ids"]) for f in feats}) > 1
    padded = PaddedCausalCollator(0)(feats)
    packed = PackedCausalCollator(0, row_tokens)(feats)
    assert packed["input_ids"].shape[0] == (1 if row_tokens == 512 else -(-sum(map(len, (f["input_ids"] for f in
                                                                                         feats))) // 20))
    ref, ref_g = loss_and_grads(model, padded, _hf_loss)
    for batch, fn in ((packed, _hf_loss), (packed, _target_loss), (padded, _target_loss)):
        loss, grads = loss_and_grads(model, batch, fn)
        assert loss == pytest.approx(ref, rel=1e-5, abs=1e-6)
        assert grads.keys() == ref_g.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_g[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_batch_layout():
    feats = features(5, seed=3)
    out = PackedCausalCollator(pad_id=0, row_tokens=512)(feats)
    n = sum(len(f["input_ids"]) for f in feats)
    assert out["input_ids"].shape == (1, n) and out[TOKENS_KEY] == n
    assert out["input_ids"][0].tolist() == [t for f in feats for t in f["input_ids"]]
    assert out["position_ids"][0].tolist() == [p for f in feats for p in range(len(f["input_ids"]))]
    assert out["labels"][0].tolist() == [t for f in feats for t in f["labels"]]
    assert "attention_mask" not in out
    # rows: padding tail gets label -100 and positions of its own
    out = PackedCausalCollator(pad_id=0, row_tokens=30)(feats)
    assert out[TOKENS_KEY] == n and int((out["labels"] != -100).sum()) == sum(
        sum(1 for t in f["labels"] if t != -100) for f in feats)
    for r in range(out["input_ids"].shape[0]):
        starts = (out["position_ids"][r] == 0).nonzero().flatten().tolist()
        assert out["labels"][r, starts].eq(-100).all()


def test_balanced_rows():
    lengths = [50, 10, 40, 30, 20, 25, 5]
    rows = balanced_rows(lengths, 60)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    sizes = [sum(lengths[i] for i in r) for r in rows]
    assert len(rows) == 3 and max(sizes) - min(sizes) <= 10
    assert balanced_rows([300], 100) == [[0]]
    assert len(balanced_rows([5, 5, 5], 1000)) == 1


def test_check_packing_accepts_llama_and_refuses_leaky_attention(models):
    import torch

    feats = features(3)
    for attn in ("sdpa", "eager"):
        res = check_packing(load_llama(models["causal"], attn), feats)
        assert res["padding_free"] and res["target_logits"], res

    class Leaky(torch.nn.Module):  # takes position_ids but lets every token see the whole row
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, position_ids=None, logits_to_keep=0):
            causal = torch.ones(input_ids.shape, dtype=torch.long)
            return self.inner(input_ids=input_ids, attention_mask=causal, logits_to_keep=logits_to_keep)

    res = check_packing(Leaky(load_llama(models["causal"], "sdpa")), feats)
    assert not res["padding_free"] and "attention crosses examples" in res["why"]


def test_length_grouped_sampler_keeps_every_example_once_per_epoch():
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(103)]
    s = LengthGroupedSampler(lengths, batch_size=8, seed=7, group_batches=4)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        order = list(s)
        assert sorted(order) == list(range(103))  # the same set of examples, each once
        batches = s.batches()
        assert [len(b) for b in batches[:-1]] == [8] * 12 and len(batches[-1]) == 7
        assert [i for b in batches for i in b] == order
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    s.set_epoch(1)
    assert list(s) == orders[1]  # a resumed run sees the same epoch again

    def padding(order):
        return sum(max(lengths[i] for i in order[b:b + 8]) * len(order[b:b + 8]) - sum(lengths[i] for i in
                   order[b:b + 8]) for b in range(0, len(order), 8))

    shuffled = list(range(103))
    random.Random(1).shuffle(shuffled)
    assert padding(orders[0]) < 0.5 * padding(shuffled)


def cfg(model, out, **kw):
    base = dict(model=model, output_dir=str(out), epochs=1, batch_size=4, learning_rate=1e-2, progress=False,
                save_steps=1000, logging_steps=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("padding_free", [True, False])
def test_tokens_seen_counts_only_the_batches_trained_on(models, tmp_path, padding_free):
    """Stopping at --max-steps mid-epoch: the dataloader has prefetched the next batch, which is not counted."""
    recs = tiny_lm.toy_records(32)
    per_example = len(build_features(recs[:1], tiny_lm.build_tokenizer(), "causal", TrainConfig())[0][0]["input_ids"])
    for steps in (1, 2, 3):
        res = train_model(recs, cfg(models["causal"], tmp_path / f"r{steps}", max_steps=steps,
                                    padding_free=padding_free))
        m = res.metrics
        assert m["global_step"] == steps and m["steps_this_run"] == steps
        assert m["tokens_seen"] == steps * 4 * per_example
        assert m["tokens_per_second"] == pytest.approx(m["tokens_seen"] / m["train_seconds"], rel=0.01)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_tokens_seen_over_whole_epochs_and_max_steps_with_varied_lengths(models, tmp_path, kind):
    recs = varied_records(20)
    res = train_model(recs, cfg(models[kind], tmp_path / "full", epochs=2, batch_size=3, group_by_length=True))
    m = res.metrics
    assert m["tokens_seen"] == 2 * m["tokens_per_epoch"]
    # mid-epoch: the examples of the batches trained on, read off the sampler's order
    res = train_model(recs, cfg(models[kind], tmp_path / "part", max_steps=4, batch_size=3, group_by_length=True))
    from insta.train.collate import LengthGroupedSampler as S

    tok = tiny_lm.build_tokenizer(seq2seq=kind == "seq2seq")
    feats, _ = build_features(recs, tok, kind, TrainConfig())
    size = [len(f["input_ids"]) + (len(f["labels"]) if kind == "seq2seq" else 0) for f in feats]
    sampler = S(size, 3, seed=42)
    trained = [i for b in sampler.batches()[:4] for i in b]
    assert res.metrics["tokens_seen"] == sum(size[i] for i in trained)


def test_group_by_length_is_part_of_the_run_fingerprint():
    assert "group_by_length" not in TrainConfig().fingerprint()  # earlier runs' records still match
    assert TrainConfig(group_by_length=True).fingerprint()["group_by_length"] is True


@pytest.mark.parametrize("lora", [False, True])
def test_padding_free_training_learns_what_padded_training_learns(models, tmp_path, lora):
    """Same batches in the same order: the loss history of padding-free + target-only logits equals the padded
    full-logits run's (full fine-tuning and LoRA)."""
    recs = varied_records(24, seed=5)
    kw = dict(max_steps=6, lora=lora, lora_r=4, lora_dropout=0.0, learning_rate=1e-2 if lora else 3e-3)
    fast = train_model(recs, cfg(models["causal"], tmp_path / "fast", **kw)).metrics
    slow = train_model(recs, cfg(models["causal"], tmp_path / "slow", padding_free=False, target_logits_only=False,
                                 **kw)).metrics
    assert fast["batching"]["padding_free"] and fast["batching"]["target_logits_only"]
    assert not slow["batching"]["padding_free"] and not slow["batching"]["target_logits_only"]
    assert fast["tokens_seen"] == slow["tokens_seen"]
    a = [h["loss"] for h in fast["loss_history"]]
    b = [h["loss"] for h in slow["loss_history"]]
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, rel=1e-3)
    assert a[-1] < a[0]


def test_lora_adapter_from_padding_free_training_loads(models, tmp_path):
    from insta.evaluate import evaluate_task
    from insta.lm import load_model

    res = train_model(tiny_lm.toy_records(32, seed=3), cfg(models["causal"], tmp_path / "lora", lora=True, lora_r=4,
                                                           epochs=4, learning_rate=2e-2, group_by_length=True))
    m = res.metrics
    assert m["batching"] == {"padding_free": True, "target_logits_only": True, "group_by_length": True,
                             "packing_row_tokens": 512}
    assert m["last_loss"] < m["first_loss"]
    evaluate_task(load_model(res.model_dir), tiny_lm.toy_examples(4), progress=False)


def test_no_checkpoint_at_the_very_end(models, tmp_path):
    train_model(tiny_lm.toy_records(16), cfg(models["causal"], tmp_path / "r", max_steps=3, save_steps=2))
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["checkpoint-2"]


def test_cli_batching_flags(models, tmp_path):
    from insta.cli import main

    mix = tmp_path / "mix.jsonl"
    mix.write_text("".join(json.dumps(r) + "\n" for r in tiny_lm.toy_records(8)))
    out = tmp_path / "run"
    rc = main(["train", "--mixture", str(mix), "--model", models["causal"], "--out", str(out), "--max-steps", "2",
               "--batch-size", "4", "--no-progress", "--no-padding-free", "--no-target-logits-only",
               "--group-by-length", "--packing-row-tokens", "64"])
    assert rc == 0
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["config"]["group_by_length"] and not saved["config"]["padding_free"]
    assert saved["config"]["packing_row_tokens"] == 64
    assert saved["metrics"]["batching"]["padding_free"] is False


@pytest.mark.slow
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_smollm2_padding_free_loss_equals_padded_loss(attn, monkeypatch):
    """SmolLM2-135M-Instruct (Llama architecture) on CPU: packed and padded batches give the same loss."""
    monkeypatch.setenv("INSTA_CACHE_DIR", REAL_CACHE)  # the converted model, as tests/test_lm_real.py uses it
    from insta.lm import load_tokenizer, resolve_model

    location = resolve_model("smollm2")
    tok = load_tokenizer(location)
    recs = [{"input": "Is the sky blue? Answer yes or no.", "target": "yes"},
            {"input": "Translate to French: cat", "target": "chat"},
            {"input": "2 + 2 =", "target": "4, as everyone knows"}]
    feats, _ = build_features(recs, tok, "causal", TrainConfig())
    model = load_llama(location, attn)
    model.train()
    assert check_packing(model, feats)["padding_free"]
    padded = {k: v for k, v in PaddedCausalCollator(tok.pad_token_id)(feats).items() if k != TOKENS_KEY}
    ref = float(_hf_loss(model, padded))
    packed = {k: v for k, v in PackedCausalCollator(tok.pad_token_id)(feats).items() if k != TOKENS_KEY}
    assert float(_hf_loss(model, packed)) == pytest.approx(ref, rel=1e-4)
    assert float(_target_loss(model, packed)) == pytest.approx(ref, rel=1e-4)
