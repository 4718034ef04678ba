"""The one-GPU cost model that every run's plan uses (the comparison grid's, :mod:`insta.experiment.gpu_cost`; the
transfer matrix's, :mod:`insta.transfer.v2_cost`): FLOPs per token measured on the model's meta-device graph,
the GPU's dense bf16 peak and the share of it training and evaluation reach, and mean lengths read from tasks."""
from __future__ import annotations

import statistics
from functools import lru_cache
from itertools import islice
from typing import Any

from ..errors import InstaError

H100_BF16_PEAK = 989e12  # FLOP/s, H100 SXM dense bf16 tensor cores (NVIDIA's datasheet; 1979e12 is with sparsity)
TRAIN_UTILISATION = 0.40
EVAL_UTILISATION = 0.20
CHARS_PER_TOKEN = 4.0  # English text under a 49k-50k BPE vocabulary (SmolLM2, GPT-2 style)
#: (prompt, target or option) tokens per instance where no data are present to measure
ASSUMED_TOKENS = {"p3": (180, 8), "niv2": (300, 12), "bigbench": (150, 6), "bbh": (250, 6)}
SAMPLE_EXAMPLES = 200  # examples per task read to measure lengths

#: architectures of hub models a GPU user would take, for offline planning (the hub's config.json, when it can be
#: reached, takes precedence)
KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152, "tie_word_embeddings": True,
        "max_position_embeddings": 8192},
    "HuggingFaceTB/SmolLM2-135M-Instruct": {
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
        "max_position_embeddings": 8192},
    "Qwen/Qwen2.5-1.5B-Instruct": {  # the hub's config.json (matrix v2's one-GPU config)
        "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 32768},
}
KNOWN_ARCHITECTURES["smollm2"] = KNOWN_ARCHITECTURES["HuggingFaceTB/SmolLM2-135M-Instruct"]


# ---------------------------------------------------------------- FLOPs per token


def model_config(model: str) -> tuple[Any, str]:
    """(transformers config, where it came from) of ``model``: its folder or the hub, else the table above."""
    from transformers import AutoConfig

    from ..lm import builtin_name, resolve_model

    try:
        loc = resolve_model(model, convert=False)
        return AutoConfig.from_pretrained(loc), f"config of {loc}"
    except Exception:  # not converted, offline, or not a model: the table below
        pass
    arch = KNOWN_ARCHITECTURES.get(builtin_name(model) or model)
    if arch is None:
        raise InstaError(f"cannot read the config of model {model!r} (offline?) and it is not in insta's table of "
                         f"known architectures ({', '.join(sorted(KNOWN_ARCHITECTURES))})")
    arch = dict(arch)
    return AutoConfig.for_model(arch.pop("model_type"), **arch), "insta's table of known architectures"


@lru_cache(maxsize=16)
def measured_flops(model: str, seq_len: int) -> dict[str, Any]:
    """Parameters and forward FLOPs per token of ``model`` over a ``seq_len``-token sequence, counted on the meta
    device (no weights; a second or two for a 2B model)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg, source = model_config(model)
    seq_len = max(1, int(seq_len))
    with torch.device("meta"):
        seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
        net = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_config(cfg)
    n_params = sum(p.numel() for p in net.parameters())
    ids = torch.zeros((1, seq_len), dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if seq2seq:
            net(input_ids=ids, decoder_input_ids=ids[:, :1])
        else:
            net(input_ids=ids)
    return {"params": int(n_params), "forward_flops_per_token": counter.get_total_flops() / seq_len,
            "seq_len": seq_len, "config_source": source}


def mean_lengths(tasks: list, rank: bool | None = None) -> tuple[float, float, float] | None:
    """Mean (prompt chars, target chars, sum of option chars) over the first examples of ``tasks``."""
    prompts, targets, options = [], [], []
    for t in tasks:
        if not t.has_examples:
            continue
        for ex in islice(t.iter_examples(), SAMPLE_EXAMPLES):
            prompts.append(len(ex.input))
            targets.append(len(ex.target))
            options.append(sum(len(o) for o in ex.options) if ex.options else len(ex.target))
    if not prompts:
        return None
    return statistics.mean(prompts), statistics.mean(targets), statistics.mean(options)


__all__ = ["ASSUMED_TOKENS", "CHARS_PER_TOKEN", "EVAL_UTILISATION", "H100_BF16_PEAK", "KNOWN_ARCHITECTURES",
           "SAMPLE_EXAMPLES", "TRAIN_UTILISATION", "mean_lengths", "measured_flops", "model_config"]
