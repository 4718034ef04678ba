"""The scoring engine: batched log-likelihoods of continuations (causal or seq2seq) and greedy generations, from a
:class:`~insta.lm.LoadedModel`; batches padded by the tokenizer.

Causal log-likelihoods with ``share_prefix`` run *packed*: a prompt's tokens once, each of its continuations after
them, and several prompts in one forward pass of up to :data:`PACK_TOKENS` tokens, under a block attention mask
(a continuation sees its prompt and itself; position ids restart after the prompt), so no token runs twice and the
matrix products are large. A model whose forward pass does not honour a custom 4D mask and position ids is caught
by a check on its first packed forward against the KV-cache path (the prompt once, its KV cache repeated over the
continuations), which then serves instead. ``share_prefix=False`` scores every (prompt, continuation) sequence
whole, as lm-evaluation-harness does.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..lm import encode_causal, encode_seq2seq

#: tokens per packed forward pass (a prompt with its continuations longer than this runs alone); measured on
#: SmolLM2-135M on 2 CPU cores, 1,024 was fastest of 512-2,048 (benchmarks/bench_eval_packing.py)
PACK_TOKENS = 1024
#: how far a packed score may differ from the KV-cache path's on the check (summed log-probabilities, float32)
PACK_CHECK_TOLERANCE = 1e-3


def pad_batch(tokenizer: Any, seqs: Sequence[Sequence[int]], side: str = "right") -> tuple[Any, Any]:
    """Token id lists as one padded batch: ``(input_ids, attention_mask)`` tensors, padded on ``side`` by
    ``tokenizer.pad`` (with id 0 when the tokenizer has no padding token)."""
    import torch

    if tokenizer.pad_token_id is not None:
        enc = tokenizer.pad({"input_ids": [list(s) for s in seqs]}, padding=True, padding_side=side,
                            return_attention_mask=True, return_tensors="pt")
        return enc["input_ids"].long(), enc["attention_mask"].long()
    rows = [torch.tensor(list(s), dtype=torch.long) for s in seqs]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0, padding_side=side)
    att = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_value=0,
                                          padding_side=side)
    return ids, att


def common_prefix_len_all(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading ids all ``seqs`` share (a truncated prompt can differ at its start between options)."""
    n = min(len(s) for s in seqs)
    for j in range(n):
        if any(s[j] != seqs[0][j] for s in seqs[1:]):
            return j
    return n


def packed_segment(enc: Sequence[tuple[list[int], int]], members: list[int]) -> tuple[list[int], list]:
    """(shared prefix ids, [(request, its ids after the prefix)]) of requests that share a prompt."""
    P = min(common_prefix_len_all([enc[i][0] for i in members]), min(enc[i][1] for i in members))
    return enc[members[0]][0][:P], [(i, enc[i][0][P:]) for i in members]


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


class Scorer:
    """Batched log-likelihoods and greedy generations from a :class:`~insta.lm.LoadedModel`."""

    def __init__(self, lm, batch_size: int = 8, max_source_length: int = 1024, progress: bool = False,
                 share_prefix: bool = True):
        self.lm = lm
        self.tok = lm.tokenizer
        self.model = lm.model
        self.batch_size = batch_size
        self.max_source_length = max_source_length
        self.progress = progress
        self.share_prefix = share_prefix
        self.n_forward = 0
        self.paths: set[str] = set()  # how log-likelihoods were scored: packed, kv-cache, whole

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _bar(self, total: int, desc: str):
        if not self.progress:
            return None
        from ..util.helpers import progress_bar

        return progress_bar(total=total, desc=desc, unit="seq", leave=False)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """``(sum of log-probs, n tokens)`` of each continuation given its prompt."""
        if self.lm.kind == "seq2seq":
            return self._ll_seq2seq(requests)
        return self._ll_causal(requests)

    def _ll_causal(self, requests):
        enc = [encode_causal(self.tok, p, c, self.max_source_length) for p, c in requests]
        out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
        bar = self._bar(len(enc), "scoring")
        rest = list(range(len(enc)))
        if self.share_prefix:
            groups: dict[str, list[int]] = {}
            for i, (p, _) in enumerate(requests):
                groups.setdefault(p, []).append(i)
            if self._packed(enc, list(groups.values()), out, bar):
                self.paths.add("packed")
                if bar is not None:
                    bar.close()
                return out
            shared = [g for g in groups.values() if len(g) > 1]
            done: set[int] = set()
            try:
                for g in shared:
                    self._ll_causal_shared(enc, g, out)
                    self.paths.add("kv-cache")
                    done.update(g)
                    if bar is not None:
                        bar.update(len(g))
            except (TypeError, AttributeError, NotImplementedError, ValueError):  # no usable KV cache
                self.share_prefix = False
            rest = [i for i in rest if i not in done]
        self._ll_causal_plain(enc, rest, out, bar)
        if rest:
            self.paths.add("whole")
        if bar is not None:
            bar.close()
        return out

    def _packed(self, enc, groups: list[list[int]], out, bar) -> bool:
        """Score every request packed (see the module docstring); ``False`` when this model cannot be packed
        (then nothing is written to ``out``). The first packed forward of a model is checked once against the
        KV-cache path on the same requests; the verdict is kept on the loaded model."""
        ok = getattr(self.lm, "packing_ok", None)
        if ok is False:
            return False
        rows = pack_rows([packed_segment(enc, g) for g in groups], PACK_TOKENS)
        for r, row in enumerate(rows):
            try:
                scores = self._packed_forward(enc, row)
            except (TypeError, ValueError, RuntimeError, NotImplementedError, IndexError):
                if r:  # it worked on earlier rows of this model: a real error
                    raise
                self._remember(False)
                return False
            if ok is None and r == 0:
                if not self._packed_agrees(enc, row, scores):
                    self._remember(False)
                    return False
                self._remember(True)
                ok = True
            for i, v in scores.items():
                out[i] = v
            if bar is not None:
                bar.update(len(scores))
        return True

    def _remember(self, ok: bool) -> None:
        try:
            self.lm.packing_ok = ok
        except AttributeError:  # a model object that takes no attributes: it is checked again next time
            pass

    def _packed_agrees(self, enc, row, scores) -> bool:
        """Whether packed scores equal the KV-cache path's on the same requests (the model honours the mask)."""
        members = [i for _, part in row for i, _ in part]
        ref: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
        try:
            for _, part in row:
                self._ll_causal_shared(enc, [i for i, _ in part], ref)
        except (TypeError, AttributeError, NotImplementedError, ValueError):
            self._ll_causal_plain(enc, members, ref, None)
        return all(scores[i][1] == ref[i][1]
                   and abs(scores[i][0] - ref[i][0]) <= PACK_CHECK_TOLERANCE * (1 + abs(ref[i][0]))
                   for i in members)

    def _packed_forward(self, enc, row) -> dict[int, tuple[float, int]]:
        """One packed forward pass over ``row`` (segments: a shared prefix and its members' remaining tokens);
        returns each member's (sum of log-probs, n tokens)."""
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
            return res
        dev = self.device
        dtype = next(self.model.parameters()).dtype
        n = len(ids)
        seg_t, mem_t, q = torch.tensor(seg), torch.tensor(mem), torch.arange(n)
        allow = ((q[None, :] <= q[:, None]) & (seg_t[None, :] == seg_t[:, None])
                 & ((mem_t[None, :] == -1) | (mem_t[None, :] == mem_t[:, None])))
        mask = torch.zeros((1, 1, n, n), dtype=dtype).masked_fill(~allow[None, None], torch.finfo(dtype).min)
        keep = sorted(set(rows))
        at = {r: j for j, r in enumerate(keep)}
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=dev), position_ids=torch.tensor([pos], device=dev),
                                attention_mask=mask.to(dev), logits_to_keep=torch.tensor(keep, device=dev)).logits[0]
        self.n_forward += 1
        if logits.shape[0] != len(keep):
            raise ValueError("the model ignored logits_to_keep")
        sel = torch.log_softmax(logits[torch.tensor([at[r] for r in rows], device=dev)].float(), dim=-1)
        lp = sel.gather(1, torch.tensor(tgts, device=dev)[:, None])[:, 0].tolist()
        sums: dict[int, float] = {}
        counts: dict[int, int] = {}
        for o, v in zip(owner, lp):
            sums[o] = sums.get(o, 0.0) + v
            counts[o] = counts.get(o, 0) + 1
        return {i: (sums.get(i, 0.0), counts.get(i, 0)) for i in res}

    def _ll_causal_shared(self, enc, members: list[int], out) -> None:
        """Score several continuations of one prompt: the shared prompt prefix runs once (its KV cache is
        repeated over the continuations), then the continuations run as one padded batch per chunk."""
        import copy

        import torch

        P = min(common_prefix_len_all([enc[i][0] for i in members]), min(enc[i][1] for i in members))
        prefix = enc[members[0]][0][:P]
        dev = self.device
        with torch.inference_mode():
            pre = self.model(input_ids=torch.tensor([prefix], device=dev), use_cache=True)
        self.n_forward += 1
        # transformers >= 5.2x names the KV cache `cache` (input and output); older versions `past_key_values`
        cache_arg = "cache" if hasattr(pre, "cache") else "past_key_values"
        cache = getattr(pre, cache_arg)
        last = torch.log_softmax(pre.logits[0, -1].float(), dim=-1)
        for s in range(0, len(members), self.batch_size):
            chunk = members[s:s + self.batch_size]
            R = max(len(enc[i][0]) - P for i in chunk)
            if R == 0:
                for i in chunk:
                    out[i] = (0.0, 0)
                continue
            ids, rem_att = pad_batch(self.tok, [enc[i][0][P:] for i in chunk])
            att = torch.cat([torch.ones((len(chunk), P), dtype=torch.long), rem_att], dim=1)
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(chunk))
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(dev), attention_mask=att.to(dev), use_cache=True,
                                    **{cache_arg: past}).logits
            self.n_forward += 1
            for r, i in enumerate(chunk):
                seq, k = enc[i]
                total, n = 0.0, 0
                rows = [pos - 1 - P for pos in range(max(k, P + 1), len(seq))]
                if k == P and len(seq) > P:  # first target token is predicted by the prefix's last position
                    total += float(last[seq[P]])
                    n += 1
                if rows:
                    sel = torch.log_softmax(logits[r, rows].float(), dim=-1)
                    tg = torch.tensor([seq[pos] for pos in range(max(k, P + 1), len(seq))], device=sel.device)
                    total += float(sel.gather(1, tg[:, None]).sum())
                    n += len(rows)
                out[i] = (total, n)

    def _ll_causal_plain(self, enc, which: list[int], out, bar) -> None:
        import torch

        order = sorted(which, key=lambda i: -len(enc[i][0]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            ids, att = pad_batch(self.tok, [enc[i][0] for i in idx])
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
            self.n_forward += 1
            rows, cols, tgts, owner = [], [], [], []
            for r, i in enumerate(idx):
                seq, k = enc[i]
                for pos in range(k, len(seq)):
                    rows.append(r)
                    cols.append(pos - 1)
                    tgts.append(seq[pos])
                    owner.append(i)
            if rows:
                sel = logits[torch.tensor(rows), torch.tensor(cols)].float()
                lp = torch.log_softmax(sel, dim=-1).gather(1, torch.tensor(tgts, device=sel.device)[:, None])[:, 0]
                sums: dict[int, float] = {}
                counts: dict[int, int] = {}
                for o, v in zip(owner, lp.tolist()):
                    sums[o] = sums.get(o, 0.0) + v
                    counts[o] = counts.get(o, 0) + 1
                for i in idx:
                    out[i] = (sums.get(i, 0.0), counts.get(i, 0))
            if bar is not None:
                bar.update(len(idx))

    def _ll_seq2seq(self, requests):
        import torch

        enc = [encode_seq2seq(self.tok, p, c, self.max_source_length) for p, c in requests]
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i][0]))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
        bar = self._bar(len(enc), "scoring")
        if enc:
            self.paths.add("whole")
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            ids, att = pad_batch(self.tok, [enc[i][0] for i in idx])
            lab, lab_att = pad_batch(self.tok, [enc[i][1] for i in idx])
            lab = lab.masked_fill(lab_att == 0, -100)  # padded label positions are ignored
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device),
                                    labels=lab.to(self.device)).logits.float()
            self.n_forward += 1
            lp = torch.log_softmax(logits, dim=-1)
            mask = lab != -100
            gathered = lp.gather(2, lab.clamp(min=0).to(lp.device)[:, :, None])[:, :, 0].cpu() * mask
            for r, i in enumerate(idx):
                out[i] = (float(gathered[r].sum()), int(mask[r].sum()))
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy continuations (decoded, special tokens removed, not stripped)."""
        import torch

        tok = self.tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        if self.lm.kind == "seq2seq":
            enc = [encode_seq2seq(tok, p, None, self.max_source_length)[0] for p in prompts]
        else:
            enc = []
            for p in prompts:
                ids = list(tok(p.rstrip(" "), add_special_tokens=True)["input_ids"])
                if not ids:
                    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
                    ids = [start]
                enc.append(ids[-self.max_source_length:])
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
        out = [""] * len(enc)
        bar = self._bar(len(enc), "generating")
        side = "right" if self.lm.kind == "seq2seq" else "left"  # a decoder continues after its last token
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            ids, att = pad_batch(tok, [enc[i] for i in idx], side)
            L = ids.shape[1]
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=att.to(self.device), do_sample=False,
                    max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tok.eos_token_id,
                    num_beams=1,
                )
            self.n_forward += 1
            new = gen if self.lm.kind == "seq2seq" else gen[:, L:]
            for r, i in enumerate(idx):
                out[i] = tok.decode(new[r].tolist(), skip_special_tokens=True)
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

