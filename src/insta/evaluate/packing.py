"""Packed scoring's layout: how rank-classification requests (a prompt and each of its options, as token ids) are
laid out in forward passes of up to :data:`PACK_TOKENS` tokens, and one such forward pass. A prompt's tokens come
once, then each option's own tokens; a block attention mask lets an option see its prompt and itself only, and
position ids restart after the prompt, so each option is scored as if it followed its prompt alone. Used by
:class:`insta.evaluate.scoring.Scorer`; :func:`packed_token_count` measures an evaluation's cost in tokens."""
from __future__ import annotations

from typing import Any, Sequence

from ..lm import common_prefix_len, encode_causal

#: tokens per packed forward pass (a prompt with its continuations longer than this runs alone); measured on
#: SmolLM2-135M on 2 CPU cores, 1,024 was fastest of 512-2,048 (benchmarks/bench_eval_packing.py)
PACK_TOKENS = 1024
#: how far a packed score may differ from the KV-cache path's on the check (summed log-probabilities, float32)
PACK_CHECK_TOLERANCE = 1e-3


def packed_segment(enc: Sequence[tuple[list[int], int]], members: list[int]) -> tuple[list[int], list]:
    """(shared prefix ids, [(request, its ids after the prefix)]) of requests that share a prompt: their context
    ids as far as every member has the same ones (a left-truncated prompt can differ at its start between options)."""
    first = enc[members[0]][0]
    P = min(min(enc[i][1] for i in members), *(common_prefix_len(first, enc[i][0]) for i in members))
    return first[:P], [(i, enc[i][0][P:]) for i in members]


def sum_by_owner(owners: Sequence[int], values: Sequence[float]) -> dict[int, tuple[float, int]]:
    """(sum, count) of per-token log-probabilities by the request that owns each token."""
    out: dict[int, tuple[float, int]] = {}
    for o, v in zip(owners, values):
        total, n = out.get(o, (0.0, 0))
        out[o] = (total + v, n + 1)
    return out


def pack_rows(segments: list[tuple[list[int], list]], budget: int) -> list[list[tuple[list[int], list]]]:
    """Segments packed greedily, in order, into rows of at most ``budget`` tokens; a segment longer than that is
    split between its members (each part repeats the prefix), a part longer than that runs alone."""
    rows: list[list[tuple[list[int], list]]] = []
    cur: list[tuple[list[int], list]] = []
    used = 0
    for prefix, members in segments:
        parts, part, n = [], [], len(prefix)
        for i, rest in members:
            if part and n + len(rest) > budget:
                parts.append((part, n))
                part, n = [], len(prefix)
            part.append((i, rest))
            n += len(rest)
        parts.append((part, n))
        for part, n in parts:
            if cur and used + n > budget:
                rows.append(cur)
                cur, used = [], 0
            cur.append((prefix, part))
            used += n
    if cur:
        rows.append(cur)
    return rows


def packed_token_count(tokenizer: Any, examples: Sequence[Any], max_source_length: int) -> int:
    """How many tokens packed scoring runs for rank examples (each prompt once, then every option's own tokens):
    a model-free measure of an evaluation's cost, proportional to its FLOPs."""
    total = 0
    for ex in examples:
        enc = [encode_causal(tokenizer, ex.input, o, max_source_length) for o in (ex.options or [])]
        if enc:
            prefix, members = packed_segment(enc, list(range(len(enc))))
            total += len(prefix) + sum(len(rest) for _, rest in members)
    return total


def packed_forward(model: Any, enc: Sequence[tuple[list[int], int]], row: list
                   ) -> tuple[dict[int, tuple[float, int]], bool]:
    """One packed forward pass over ``row`` (segments: a shared prefix and its members' remaining tokens);
    returns each member's (sum of log-probs, n tokens), and whether a forward pass ran."""
    import torch

    ids: list[int] = []
    pos: list[int] = []
    seg: list[int] = []
    mem: list[int] = []
    where = []  # (request, offset of its prefix, prefix length, offset of its own tokens)
    for s, (prefix, part) in enumerate(row):
        start = len(ids)
        ids += prefix
        pos += range(len(prefix))
        seg += [s] * len(prefix)
        mem += [-1] * len(prefix)
        for i, rest in part:
            where.append((i, start, len(prefix), len(ids)))
            ids += rest
            pos += range(len(prefix), len(prefix) + len(rest))
            seg += [s] * len(rest)
            mem += [i] * len(rest)
    rows, tgts, owner = [], [], []
    for i, start, P, o in where:
        seq, k = enc[i]
        for p in range(max(k, 1), len(seq)):  # token p is predicted at the position of token p - 1
            rows.append(start + p - 1 if p - 1 < P else o + (p - 1 - P))
            tgts.append(seq[p])
            owner.append(i)
    res: dict[int, tuple[float, int]] = {i: (0.0, 0) for i, *_ in where}
    if not rows:
        return res, False
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n = len(ids)
    seg_t, mem_t, q = torch.tensor(seg), torch.tensor(mem), torch.arange(n)
    allow = ((q[None, :] <= q[:, None]) & (seg_t[None, :] == seg_t[:, None])
             & ((mem_t[None, :] == -1) | (mem_t[None, :] == mem_t[:, None])))
    mask = torch.zeros((1, 1, n, n), dtype=dtype).masked_fill(~allow[None, None], torch.finfo(dtype).min)
    keep = sorted(set(rows))
    at = {r: j for j, r in enumerate(keep)}
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=dev), position_ids=torch.tensor([pos], device=dev),
                       attention_mask=mask.to(dev), logits_to_keep=torch.tensor(keep, device=dev)).logits[0]
    if logits.shape[0] != len(keep):
        raise ValueError("the model ignored logits_to_keep")
    sel = torch.log_softmax(logits[torch.tensor([at[r] for r in rows], device=dev)].float(), dim=-1)
    lp = sel.gather(1, torch.tensor(tgts, device=dev)[:, None])[:, 0].tolist()
    return {**res, **sum_by_owner(owner, lp)}, True
