"""Batches for :mod:`insta.train`: padding-free packing for causal LMs, dynamic padding, length-grouped order,
and a loss computed on the target positions only.

* :class:`PackedCausalCollator` (padding-free): a batch's examples are laid end to end in one row (or a few
  balanced rows when the batch holds more than ``row_tokens`` tokens), with ``position_ids`` that restart at 0 for
  every example and no attention mask. transformers' mask builders read the restarts as packed sequences and give
  each example a block-diagonal causal mask, so every example attends to itself only, at its own positions: the
  same computation as a padded batch without the padding. The first label of every example is -100 (a prompt
  token), so the token before it never learns to predict across the boundary.
* :class:`PaddedCausalCollator`: right-padding to the batch's longest example (padding gets label -100).
* :class:`LengthGroupedSampler`: each epoch a fresh random order, cut into groups of ``group_batches`` batches;
  a group is sorted by length and cut into batches, and the batches of the epoch are shuffled. Every example
  appears exactly once per epoch; only the batch composition changes (similar lengths together).
* :func:`target_only_loss`: the causal LM loss with the LM head applied only where a label is set (the target
  tokens): the loss and its gradients are those of the full-logits loss, without the vocabulary-sized logits of
  every prompt token (a 49k-vocabulary head is a fifth of SmolLM2-135M's compute per token).

Heavy imports (torch) happen inside the functions.
"""
from __future__ import annotations

import random
from typing import Any, Iterator, Sequence

#: Default cap on the tokens of one packed row (more tokens in a batch make more, balanced rows).
DEFAULT_ROW_TOKENS = 512
#: The batch key that carries the batch's real (non-padding) token count; the trainer pops it before the model
#: sees the batch and adds it up for the batches it trains on (prefetched batches are never counted).
TOKENS_KEY = "insta_tokens"
#: Label of the positions that carry no loss (prompt tokens, padding).
IGNORE = -100


def balanced_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Split examples (their lengths) into ``ceil(total / row_tokens)`` rows of nearly equal token counts.

    Longest first, each example goes to the row with the fewest tokens so far; a row keeps its examples in their
    batch order. An example longer than ``row_tokens`` simply makes its row longer.
    """
    total = sum(lengths)
    n_rows = max(1, min(len(lengths), -(-total // max(1, row_tokens))))
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    sizes = [0] * n_rows
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(n_rows), key=lambda r: (sizes[r], r))
        rows[r].append(i)
        sizes[r] += lengths[i]
    return [sorted(r) for r in rows if r]


class PackedCausalCollator:
    """Padding-free batches for causal LMs: ``input_ids``, ``position_ids`` and ``labels`` of shape
    ``(rows, tokens)``, the examples of the batch end to end (see the module docstring)."""

    def __init__(self, pad_id: int, row_tokens: int = DEFAULT_ROW_TOKENS):
        self.pad_id = pad_id
        self.row_tokens = row_tokens

    def __call__(self, batch: list[dict]) -> dict[str, Any]:
        import torch

        rows = balanced_rows([len(f["input_ids"]) for f in batch], self.row_tokens)
        width = max(sum(len(batch[i]["input_ids"]) for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        # the tail of a short row is a segment of its own (positions from 0), so no example attends to it
        pos = torch.arange(width, dtype=torch.long).repeat(len(rows), 1)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                f = batch[i]
                n = len(f["input_ids"])
                ids[r, at:at + n] = torch.tensor(f["input_ids"], dtype=torch.long)
                lab[r, at:at + n] = torch.tensor(f["labels"], dtype=torch.long)
                lab[r, at] = IGNORE  # never predict an example's first token from the previous example
                pos[r, at:at + n] = torch.arange(n)
                at += n
            pos[r, at:] = torch.arange(width - at)
        n_real = sum(len(f["input_ids"]) for f in batch)
        return {"input_ids": ids, "position_ids": pos, "labels": lab, TOKENS_KEY: n_real}


class PaddedCausalCollator:
    """Right-pads causal features to the batch's longest; padding gets label -100 and attention mask 0."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict[str, Any]:
        import torch

        n = max(len(f["input_ids"]) for f in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(batch), n), dtype=torch.long)
        lab = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        for i, f in enumerate(batch):
            L = len(f["input_ids"])
            ids[i, :L] = torch.tensor(f["input_ids"], dtype=torch.long)
            att[i, :L] = 1
            lab[i, :L] = torch.tensor(f["labels"], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": att, "labels": lab,
                TOKENS_KEY: sum(len(f["input_ids"]) for f in batch)}


class Seq2SeqCollator:
    """``DataCollatorForSeq2Seq`` with dynamic padding (labels padded with -100); real tokens = encoder tokens +
    target tokens."""

    def __init__(self, tokenizer, model):
        from transformers import DataCollatorForSeq2Seq

        self.inner = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE, padding=True)

    def __call__(self, batch: list[dict]) -> dict[str, Any]:
        out = self.inner([dict(f) for f in batch])
        out[TOKENS_KEY] = sum(len(f["input_ids"]) + len(f["labels"]) for f in batch)
        return out


class LengthGroupedSampler:
    """Example order for length-grouped batches (see the module docstring); ``set_epoch`` picks the epoch's
    shuffle, so a resumed run sees the batches the interrupted one would have seen."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_batches: int = 16):
        self.lengths = list(lengths)
        self.batch_size = max(1, batch_size)
        self.seed = seed
        self.group_batches = max(1, group_batches)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in training order (only the last one may be short)."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        group = self.group_batches * self.batch_size
        full: list[list[int]] = []
        for g in range(0, len(order), group):
            members = sorted(order[g:g + group], key=lambda i: self.lengths[i])  # stable: ties keep the shuffle
            full.extend(members[b:b + self.batch_size] for b in range(0, len(members), self.batch_size))
        # groups hold whole batches, so only the epoch's last batch can be short: it stays last, where the
        # DataLoader's own batching puts it
        whole = [b for b in full if len(b) == self.batch_size]
        rng.shuffle(whole)
        return whole + [b for b in full if len(b) < self.batch_size]

    def __iter__(self) -> Iterator[int]:
        for b in self.batches():
            yield from b


def target_only_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """Causal LM loss (mean over the target tokens, or their sum over ``num_items_in_batch``) with logits only
    at the positions that predict a target token (``logits_to_keep`` as a boolean mask); ``inputs`` holds
    ``labels``. Returns ``(loss, outputs)``."""
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    shift = F.pad(labels[..., 1:], (0, 1), value=IGNORE)
    keep = shift.ne(IGNORE)
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if logits.dim() == keep.dim() + 1 and logits.shape[:-1] == keep.shape:  # the model ignored the mask
        logits = logits[keep]
    target = shift[keep]
    if num_items_in_batch is None:
        loss = F.cross_entropy(logits.float(), target, reduction="mean")
    else:
        loss = F.cross_entropy(logits.float(), target, reduction="sum") / num_items_in_batch
    return loss, outputs


def check_packing(model, features: Sequence[dict], *, probe_tokens: int = 12) -> dict[str, Any]:
    """Whether ``model`` computes a packed batch exactly as separate sequences, and whether it honours a boolean
    ``logits_to_keep`` (one forward pass on a few short slices of ``features``, in eval mode, no gradients).

    Returns ``{"padding_free": bool, "target_logits": bool, "why": str}``.
    """
    import inspect

    import torch

    result = {"padding_free": False, "target_logits": False, "why": ""}
    params = inspect.signature(type(model).forward).parameters
    if "position_ids" not in params:
        result["why"] = f"{type(model).__name__}.forward takes no position_ids"
        return result
    no_cache = {"use_cache": False} if "use_cache" in params else {}  # a cache object hides the packing
    seqs = [list(f["input_ids"][:probe_tokens]) for f in features[:3] if len(f["input_ids"]) >= 2]
    if len(seqs) < 2:
        seqs = [[1, 2, 3, 4], [5, 6, 7]]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sep = [model(input_ids=torch.tensor([s]), **no_cache).logits[0].float() for s in seqs]
            ids = torch.tensor([sum(seqs, [])])
            pos = torch.tensor([[p for s in seqs for p in range(len(s))]])
            packed = model(input_ids=ids, position_ids=pos, **no_cache).logits[0].float()
            ref = torch.cat(sep)
            tol = 1e-3 if packed.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32 else 5e-2
            scale = max(1.0, float(ref.abs().max()))
            err = float((packed - ref).abs().max()) / scale
            if err > tol:
                result["why"] = f"packed sequences differ from separate ones ({err:.2g}): attention crosses examples"
                return result
            result["padding_free"] = True
            if "logits_to_keep" in params:
                keep = torch.zeros(ids.shape, dtype=torch.bool)
                keep[0, 1::2] = True
                part = model(input_ids=ids, position_ids=pos, logits_to_keep=keep, **no_cache).logits.float()
                if part.dim() == 3 and part.shape[:2] == keep.shape:
                    part = part[keep]
                result["target_logits"] = part.shape == ref[keep[0]].shape and bool(
                    (part - ref[keep[0]]).abs().max() / scale <= tol)
            if not result["target_logits"]:
                result["why"] = "the model does not take a boolean logits_to_keep"
    except Exception as err:  # noqa: BLE001 - any failure means: use padded batches
        result.update(padding_free=False, target_logits=False, why=f"{type(err).__name__}: {str(err)[:120]}")
    finally:
        model.train(was_training)
    return result


__all__ = ["DEFAULT_ROW_TOKENS", "LengthGroupedSampler", "PackedCausalCollator", "PaddedCausalCollator",
           "Seq2SeqCollator", "TOKENS_KEY", "balanced_rows", "check_packing", "target_only_loss"]
