"""The scoring engine: batched log-likelihoods of continuations (causal or seq2seq) and greedy generations, from a
:class:`~insta.lm.LoadedModel`; batches padded by the tokenizer.

Causal log-likelihoods with ``share_prefix`` run *packed* (:mod:`insta.evaluate.packing`): a prompt's tokens once,
each of its continuations after them, and several prompts in one forward pass of up to
:data:`~insta.evaluate.packing.PACK_TOKENS` tokens, under a block attention mask (a continuation sees its prompt and
itself; position ids restart after the prompt), so no token runs twice and the matrix products are large. A model
whose forward pass does not honour a custom 4D mask and position ids is caught by a check on its first packed
forward against the KV-cache path (the prompt once, its KV cache repeated over the continuations), which then
serves instead. ``share_prefix=False`` scores every (prompt, continuation) sequence whole, as lm-evaluation-harness
does.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..lm import encode_causal, encode_seq2seq
from . import packing


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
        rows = packing.pack_rows([packing.packed_segment(enc, g) for g in groups], packing.PACK_TOKENS)
        for r, row in enumerate(rows):
            try:
                scores, ran = packing.packed_forward(self.model, enc, row)
                self.n_forward += ran
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
                   and abs(scores[i][0] - ref[i][0]) <= packing.PACK_CHECK_TOLERANCE * (1 + abs(ref[i][0]))
                   for i in members)

    def _ll_causal_shared(self, enc, members: list[int], out) -> None:
        """Score several continuations of one prompt: the shared prompt prefix runs once (its KV cache is
        repeated over the continuations), then the continuations run as one padded batch per chunk."""
        import copy

        import torch

        prefix, _ = packing.packed_segment(enc, members)
        P = len(prefix)
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
                totals = packing.sum_by_owner(owner, lp.tolist())
                for i in idx:
                    out[i] = totals.get(i, (0.0, 0))
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

