"""Training features and batches: tokenised examples, the collator chosen for the model, the mixture's records and
digest."""
from __future__ import annotations

import logging

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import InstaError
from .config import TrainConfig

logger = logging.getLogger(__name__)


def build_features(records: Sequence[dict[str, Any]], tokenizer, kind: str,
                   config: TrainConfig) -> tuple[list[dict], dict]:
    """Tokenised training features (``input_ids``, ``labels``) and statistics (tokens, truncations)."""
    from ..lm import encode_causal, encode_seq2seq

    feats: list[dict] = []
    n_tokens = n_target = truncated = 0
    for r in records:
        prompt, target = r["input"], r["target"]
        if not target.strip():
            continue
        if kind == "causal":
            untrunc, k0 = encode_causal(tokenizer, prompt, target, add_eos=config.add_eos)
            ids, k = encode_causal(tokenizer, prompt, target, config.max_source_length, config.max_target_length,
                                   add_eos=config.add_eos)
            truncated += len(ids) < len(untrunc)
            labels = [-100] * k + ids[k:]
            feats.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
            n_tokens += len(ids)
            n_target += len(ids) - k
        else:
            src, tgt = encode_seq2seq(tokenizer, prompt, target)
            src_t, tgt_t = encode_seq2seq(tokenizer, prompt, target, config.max_source_length, config.max_target_length)
            truncated += (len(src_t) < len(src)) or (len(tgt_t) < len(tgt))
            feats.append({"input_ids": src_t, "attention_mask": [1] * len(src_t), "labels": tgt_t})
            n_tokens += len(src_t) + len(tgt_t)
            n_target += len(tgt_t)
    if not feats:
        raise InstaError("the mixture has no example with a non-empty target")
    return feats, {"n_examples": len(feats), "tokens_per_epoch": n_tokens, "target_tokens_per_epoch": n_target,
                   "n_truncated": truncated}


def training_dataset(feats: list[dict]) -> Any:
    """The features as a ``datasets.Dataset`` (what the Trainer's dataloader reads; columns kept as they are)."""
    import datasets

    return datasets.Dataset.from_list(feats)

def choose_batching(config: TrainConfig, kind: str, model, tokenizer, feats: list[dict]) -> dict[str, Any]:
    """The collator and what it does: padding-free and target-only logits where the model was checked to
    support them (causal LMs), padded batches otherwise (with the reason in ``fallback``)."""
    from .collate import PackedCausalCollator, PaddedCausalCollator, Seq2SeqCollator, check_packing

    out: dict[str, Any] = {"padding_free": False, "target_logits_only": False,
                           "group_by_length": config.group_by_length}
    if kind == "seq2seq":
        out["collator"] = Seq2SeqCollator(tokenizer, model)
        return out
    if config.padding_free or config.target_logits_only:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a LoRA wrapper
        check = check_packing(base, feats)
        out["padding_free"] = config.padding_free and check["padding_free"]
        out["target_logits_only"] = config.target_logits_only and check["target_logits"]
        if (config.padding_free and not out["padding_free"]) or (config.target_logits_only
                                                                 and not out["target_logits_only"]):
            out["fallback"] = check["why"]
            logger.warning(f"{check['why']}; using "
                           f"{'padded batches' if not out['padding_free'] else 'full logits'}")
    if out["padding_free"]:
        if getattr(model.config, "use_cache", None):
            model.config.use_cache = False  # a cache object would hide the packed sequences from the mask builder
        out["collator"] = PackedCausalCollator(tokenizer.pad_token_id, config.packing_row_tokens)
        out["packing_row_tokens"] = config.packing_row_tokens
    else:
        out["collator"] = PaddedCausalCollator(tokenizer.pad_token_id)
    return out


def records_of(mixture: Any) -> tuple[list[dict[str, Any]], str]:
    from ..mixture import Mixture, normalize_record, read_mixture

    if isinstance(mixture, (str, os.PathLike)):
        return read_mixture(mixture), str(mixture)
    if isinstance(mixture, Mixture):
        return [normalize_record(r) for r in mixture.records], "<Mixture>"
    recs = list(mixture)
    if not recs:
        raise InstaError("the mixture is empty")
    return [normalize_record(r, f"record {i}") for i, r in enumerate(recs)], "<records>"


def mixture_digest(records: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r["input"].encode())
        h.update(b"\x00")
        h.update(r["target"].encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def base_for_metadata(name: str) -> str:
    from ..lm import builtin_name

    if builtin_name(name):
        return name
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name

