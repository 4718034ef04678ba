"""Zero-shot evaluation of a model (base or trained) on a target task.

* **Rank classification** (examples with ``options``): every option is scored by the sum of its token
  log-probabilities given the prompt, under lm-evaluation-harness's names (:mod:`insta.metrics`): ``acc``
  (argmax of the sum; the T0 / INSTA protocol value), ``acc_norm`` (the sum divided by the option's length in
  characters, as lm-eval), ``acc_norm_token`` (divided by its token count) and ``acc_calibrated`` (argmax of
  ``log p(option | prompt) - log p(option | content-free prompt)``); balanced accuracy (``bal_acc*``) and
  macro-F1 (``macro_f1*``) for each rule (classes = the gold option's text), and two continuous metrics of the
  gold option: its mean summed log-probability (``gold_logprob``) and its mean per-token NLL
  (``gold_nll_per_token``). ``primary_metric`` (default ``acc``) names the headline number. On a causal LM the
  log-likelihoods, ``acc`` and ``acc_norm`` equal lm-eval's on the same prompts (tests/test_lm_eval_parity.py;
  ``insta export-lm-eval`` writes a task as an lm-eval task).

  Content-free prompt (``calibration``): ``"auto"`` replaces the example's raw input inside its rendered prompt
  with ``"N/A"`` when the catalog records it (``provenance["raw_input"]``), so the frame (instruction, listed
  choices, answer prefix) stays; otherwise (and with ``"fixed"``) the prompt is the fixed string
  ``content_free_prompt`` (default ``"Q: N/A\\nA: "``), whose option scores are computed once per option text.
  ``"unconditional"`` scores each option (with the space that joins it to the prompt) after nothing but the
  BOS/EOS token: lm-eval's ``acc_mutual_info``. ``"none"`` skips calibration (half the scoring cost when raw
  inputs are known).

* **Generation** (examples without options): greedy decoding, ``max_new_tokens``; the output is cut at the
  first ``stop`` string (default a newline) and stripped; ROUGE-L (x100) and exact match, each the max over
  the references. Causal prompts lose trailing spaces before generation (the answer token carries its space).

* **Templates** (T0 protocol): when the examples carry ``provenance["template_id"]`` with more than one
  template, every metric is computed per template and averaged over templates (``metrics``), with the pooled
  value in ``metrics_pooled`` and each template's in ``per_template``.

Outputs (:func:`write_results`): ``<out>/<task>/results.json`` and ``samples.jsonl``, written atomically.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import InstaError
from .metrics import LEGACY_RANK_METRICS, RANK_METRICS, RANK_RULES, rank_metric, rank_rule
from .options import apply_overrides
from .records import Example, Task

GEN_METRICS = ("rouge_l", "exact_match")
MODES = ("auto", "rank", "generate")
CALIBRATIONS = ("auto", "fixed", "unconditional", "none")


@dataclass
class EvalConfig:
    """Every knob of an evaluation."""

    mode: str = "auto"  # auto: rank classification where examples have options, generation elsewhere
    limit: int | None = None  # first N examples
    limit_per_template: int | None = None  # first N examples of each template (T0-style tasks)
    batch_size: int = 8  # sequences per forward pass
    share_prefix: bool = True  # causal LMs: run a prompt once for all its options (KV cache), then the options
    primary_metric: str | None = None  # default: acc (rank), rouge_l (generation; exact_match for bbh)
    calibration: str = "auto"
    content_free_input: str = "N/A"
    content_free_prompt: str = "Q: N/A\nA: "
    max_source_length: int = 1024  # prompt tokens kept (causal: the end; seq2seq: the start)
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    average_over_templates: bool | None = None  # None: when the examples carry 2+ template ids
    samples: bool = True  # keep per-sample records
    progress: bool = True

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InstaError(f"unknown evaluation mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.calibration not in CALIBRATIONS:
            raise InstaError(f"unknown calibration {self.calibration!r} (choose from {', '.join(CALIBRATIONS)})")
        if self.primary_metric in LEGACY_RANK_METRICS and self.primary_metric not in RANK_METRICS:
            raise InstaError(f"primary metric {self.primary_metric!r} is now called "
                             f"{LEGACY_RANK_METRICS[self.primary_metric]!r} (lm-evaluation-harness names: acc = summed "
                             "log-likelihood, acc_norm = per character, acc_norm_token = per token)")
        if self.primary_metric is not None and self.primary_metric not in RANK_METRICS + GEN_METRICS:
            raise InstaError(f"unknown primary metric {self.primary_metric!r} "
                             f"(choose from {', '.join(RANK_METRICS + GEN_METRICS)})")
        for name in ("batch_size", "max_new_tokens", "max_source_length"):
            if getattr(self, name) < 1:
                raise InstaError(f"{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("limit", "limit_per_template"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InstaError(f"{name} must be at least 1 (got {v})")


# ---------------------------------------------------------------- scoring engine


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

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _bar(self, total: int, desc: str):
        if not self.progress:
            return None
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="seq", leave=False)
        except ImportError:  # pragma: no cover
            return None

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """``(sum of log-probs, n tokens)`` of each continuation given its prompt."""
        if self.lm.kind == "seq2seq":
            return self._ll_seq2seq(requests)
        return self._ll_causal(requests)

    def _ll_causal(self, requests):
        from .lm import encode_causal

        enc = [encode_causal(self.tok, p, c, self.max_source_length) for p, c in requests]
        out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
        bar = self._bar(len(enc), "scoring")
        rest = list(range(len(enc)))
        if self.share_prefix:
            groups: dict[str, list[int]] = {}
            for i, (p, _) in enumerate(requests):
                groups.setdefault(p, []).append(i)
            shared = [g for g in groups.values() if len(g) > 1]
            done: set[int] = set()
            try:
                for g in shared:
                    self._ll_causal_shared(enc, g, out)
                    done.update(g)
                    if bar is not None:
                        bar.update(len(g))
            except (TypeError, AttributeError, NotImplementedError, ValueError):  # no usable KV cache
                self.share_prefix = False
            rest = [i for i in rest if i not in done]
        self._ll_causal_plain(enc, rest, out, bar)
        if bar is not None:
            bar.close()
        return out

    def _ll_causal_shared(self, enc, members: list[int], out) -> None:
        """Score several continuations of one prompt: the shared prompt prefix runs once (its KV cache is
        repeated over the continuations), then the continuations run as one padded batch per chunk."""
        import copy

        import torch

        P = min(enc[i][1] for i in members)
        prefix = enc[members[0]][0][:P]
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
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
            ids = torch.full((len(chunk), R), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), P + R), dtype=torch.long)
            att[:, :P] = 1
            for r, i in enumerate(chunk):
                rem = enc[i][0][P:]
                ids[r, :len(rem)] = torch.tensor(rem)
                att[r, P:P + len(rem)] = 1
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
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            L = max(len(enc[i][0]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            att = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                seq = enc[i][0]
                ids[r, :len(seq)] = torch.tensor(seq)
                att[r, :len(seq)] = 1
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

        from .lm import encode_seq2seq

        enc = [encode_seq2seq(self.tok, p, c, self.max_source_length) for p, c in requests]
        order = sorted(range(len(enc)), key=lambda i: -len(enc[i][0]))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(enc)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        bar = self._bar(len(enc), "scoring")
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            Ls = max(len(enc[i][0]) for i in idx)
            Lt = max(len(enc[i][1]) for i in idx)
            ids = torch.full((len(idx), Ls), pad, dtype=torch.long)
            att = torch.zeros((len(idx), Ls), dtype=torch.long)
            lab = torch.full((len(idx), Lt), -100, dtype=torch.long)
            for r, i in enumerate(idx):
                src, tgt = enc[i]
                ids[r, :len(src)] = torch.tensor(src)
                att[r, :len(src)] = 1
                lab[r, :len(tgt)] = torch.tensor(tgt)
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

        from .lm import encode_seq2seq

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
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            L = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            att = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                seq = enc[i]
                if self.lm.kind == "seq2seq":  # right padding for the encoder
                    ids[r, :len(seq)] = torch.tensor(seq)
                    att[r, :len(seq)] = 1
                else:  # left padding for a decoder
                    ids[r, L - len(seq):] = torch.tensor(seq)
                    att[r, L - len(seq):] = 1
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


# ---------------------------------------------------------------- helpers


def cut_at_stop(text: str, stop: Iterable[str]) -> str:
    """The text up to the first stop string that occurs after some non-space content, stripped."""
    body = text.lstrip()
    cut = len(body)
    for s in stop:
        if s:
            j = body.find(s)
            if 0 <= j < cut:
                cut = j
    return body[:cut].strip()


def gold_label(ex: Example, task_id: str = "") -> int:
    """The gold option index: ``label``, else the first reference found among the options."""
    if not ex.options or len(ex.options) < 2:
        raise InstaError(f"example {ex.id!r} of {task_id or 'the task'} has fewer than 2 answer options: "
                         "rank classification needs them (use mode 'generate')")
    if ex.label is not None:
        if not 0 <= ex.label < len(ex.options):
            raise InstaError(f"example {ex.id!r} of {task_id or 'the task'}: label {ex.label} is out of range "
                             f"for {len(ex.options)} options")
        return ex.label
    for ref in ex.references:
        if ref in ex.options:
            return ex.options.index(ref)
    raise InstaError(f"example {ex.id!r} of {task_id or 'the task'} has options but no gold label")


def content_free_prompt(ex: Example, config: EvalConfig) -> str:
    """The content-free prompt of an example (see the module docstring; ``""`` for ``unconditional``)."""
    if config.calibration == "unconditional":
        return ""
    if config.calibration == "auto":
        raw = (ex.provenance or {}).get("raw_input")
        if isinstance(raw, str) and raw.strip() and raw in ex.input:
            return ex.input.replace(raw, config.content_free_input, 1)
    return config.content_free_prompt


def template_of(ex: Example) -> str | None:
    tid = (ex.provenance or {}).get("template_id")
    return None if tid is None else str(tid)


def limit_examples(examples: Sequence[Example], limit: int | None = None,
                   limit_per_template: int | None = None) -> list[Example]:
    out = list(examples)
    if limit_per_template is not None:
        seen: dict[str | None, int] = {}
        kept = []
        for ex in out:
            t = template_of(ex)
            if seen.get(t, 0) < limit_per_template:
                kept.append(ex)
                seen[t] = seen.get(t, 0) + 1
        out = kept
    if limit is not None:
        out = out[:limit]
    return out


def _argmax(xs: Sequence[float]) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def _rank_metrics(samples: list[dict[str, Any]]) -> dict[str, float]:
    from .metrics import accuracy, balanced_accuracy, gold_score, macro_f1

    out: dict[str, float] = {"n": len(samples)}
    golds = [s["reference"] for s in samples]
    for rule in RANK_RULES:
        key = f"pred_{rule}"
        if any(s.get(key) is None for s in samples):
            continue
        preds = [s["options"][s[key]] for s in samples]
        out[rank_metric("acc", rule)] = accuracy([s[key] == s["label"] for s in samples], [True] * len(samples))
        out[rank_metric("bal_acc", rule)] = balanced_accuracy(preds, golds)
        out[rank_metric("macro_f1", rule)] = macro_f1(preds, golds)
    gold = [gold_score(s) for s in samples]
    out["gold_logprob"] = sum(lp for lp, _ in gold) / len(samples)
    out["gold_nll_per_token"] = sum(nll for _, nll in gold) / len(samples)
    out["n_classes"] = len(set(golds))
    return out


def _gen_metrics(samples: list[dict[str, Any]]) -> dict[str, float]:
    n = len(samples)
    return {"n": n, "rouge_l": sum(s["rouge_l"] for s in samples) / n,
            "exact_match": sum(s["exact_match"] for s in samples) / n}


def _metrics(samples: list[dict[str, Any]]) -> dict[str, float]:
    rank = [s for s in samples if s["type"] == "rank"]
    gen = [s for s in samples if s["type"] == "generate"]
    out: dict[str, float] = {}
    if rank:
        out.update(_rank_metrics(rank))
    if gen:
        g = _gen_metrics(gen)
        if rank:
            out["n_generate"] = g.pop("n")
        out.update(g)
    if rank and gen:
        out["n"] = len(samples)
    return out


def _average(per_group: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(m) for m in per_group.values()))
    out = {}
    for k in sorted(keys):
        if k in ("n", "n_generate", "n_classes"):
            continue
        vals = [m[k] for m in per_group.values() if isinstance(m[k], (int, float)) and not math.isnan(m[k])]
        if vals:
            out[k] = sum(vals) / len(vals)
    out["n"] = sum(m["n"] for m in per_group.values())
    out["n_templates"] = len(per_group)
    return out


# ---------------------------------------------------------------- evaluation


def evaluate_examples(lm, examples: Sequence[Example], config: EvalConfig | None = None, task_id: str = "",
                      catalog: str = "") -> dict[str, Any]:
    """Evaluate a loaded model on examples; returns the results dict with ``samples`` (per-sample records)."""
    from .metrics import exact_match, rouge_l
    from .prompt_format import join_prompt_target

    config = config or EvalConfig()
    config.validate()
    examples = limit_examples(examples, config.limit, config.limit_per_template)
    if not examples:
        raise InstaError(f"task {task_id or '?'} has no instances to evaluate")
    t0 = time.perf_counter()
    if config.mode == "rank":
        rank_ex = list(examples)
        gen_ex: list[Example] = []
    elif config.mode == "generate":
        rank_ex, gen_ex = [], list(examples)
    else:
        rank_ex = [ex for ex in examples if ex.options]
        gen_ex = [ex for ex in examples if not ex.options]
    labels = [gold_label(ex, task_id) for ex in rank_ex]
    for ex in gen_ex:
        if not ex.references or not any(r.strip() for r in ex.references):
            raise InstaError(f"example {ex.id!r} of {task_id or 'the task'} has no reference answer to compare with")

    primary = config.primary_metric or ("acc" if rank_ex else ("exact_match" if catalog == "bbh" else "rouge_l"))
    if (primary in RANK_METRICS and not rank_ex) or (primary in GEN_METRICS and not gen_ex):
        raise InstaError(f"primary metric {primary!r} does not apply to task {task_id or '?'} "
                         f"({'no examples with answer options' if not rank_ex else 'no generation examples'})")
    rule = rank_rule(primary) or "sum"
    if rule == "calibrated" and config.calibration == "none":
        raise InstaError(f"primary metric {primary!r} needs calibration (it is 'none')")

    scorer = Scorer(lm, config.batch_size, config.max_source_length, config.progress, config.share_prefix)
    samples: list[dict[str, Any]] = []

    if rank_ex:
        reqs: list[tuple[str, str]] = []
        spans = []
        for ex in rank_ex:
            start = len(reqs)
            reqs.extend((ex.input, opt) for opt in ex.options)
            spans.append((start, len(reqs)))
        cf_index: dict[tuple[str, str], int] = {}
        cf_of: list[list[int]] = []
        if config.calibration != "none":
            for ex in rank_ex:
                cfp = content_free_prompt(ex, config)
                row = []
                for opt in ex.options:
                    # unconditional: the option as it follows this prompt (lm-eval: delimiter + choice)
                    key = (cfp, join_prompt_target(ex.input, opt)[1] if not cfp else opt)
                    if key not in cf_index:
                        cf_index[key] = len(reqs)
                        reqs.append(key)
                    row.append(cf_index[key])
                cf_of.append(row)
        scores = scorer.loglikelihood(reqs)
        for j, (ex, lab, (a, b)) in enumerate(zip(rank_ex, labels, spans)):
            sums = [scores[i][0] for i in range(a, b)]
            ntok = [scores[i][1] for i in range(a, b)]
            rule_scores = {
                "sum": sums,
                "norm": [s / max(1, len(o)) for s, o in zip(sums, ex.options)],  # lm-eval: per character
                "norm_token": [s / max(1, n) for s, n in zip(sums, ntok)],
                "calibrated": [s - scores[c][0] for s, c in zip(sums, cf_of[j])] if cf_of else None,
            }
            rec = {"type": "rank", "id": ex.id, "input": ex.input, "options": list(ex.options), "label": lab,
                   "reference": ex.options[lab], "n_tokens": ntok}
            for r, sc in rule_scores.items():
                rec[f"scores_{r}"] = sc
                rec[f"pred_{r}"] = _argmax(sc) if sc else None
            rec["template_id"] = template_of(ex)
            samples.append(rec)

    if gen_ex:
        outs = scorer.generate([ex.input for ex in gen_ex], config.max_new_tokens)
        for ex, raw in zip(gen_ex, outs):
            pred = cut_at_stop(raw, config.stop)
            refs = [r for r in ex.references if r.strip()]
            samples.append({
                "type": "generate", "id": ex.id, "input": ex.input, "options": None, "references": refs,
                "reference": refs[0], "raw_output": raw, "prediction": pred,
                "exact_match": exact_match(pred, refs), "rouge_l": rouge_l(pred, refs), "template_id": template_of(ex),
            })
    seconds = time.perf_counter() - t0

    for s in samples:
        if s["type"] == "rank":
            p = s[f"pred_{rule}"]
            s["prediction"] = s["options"][p]
            s["correct"] = p == s["label"]
        else:
            s["correct"] = bool(s["exact_match"])

    pooled = _metrics(samples)
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault(s["template_id"] or "", []).append(s)
    use_templates = config.average_over_templates
    if use_templates is None:
        use_templates = len(groups) > 1 and "" not in groups
    result: dict[str, Any] = {"task": task_id, "catalog": catalog, "n": len(samples)}
    if use_templates and len(groups) > 0:
        per_template = {t: _metrics(g) for t, g in groups.items()}
        result["metrics"] = _average(per_template)
        result["metrics_pooled"] = pooled
        result["per_template"] = per_template
    else:
        result["metrics"] = pooled
    if primary not in result["metrics"]:
        raise InstaError(f"primary metric {primary!r} does not apply to task {task_id or '?'} "
                         f"(available: {', '.join(k for k in result['metrics'] if not k.startswith('n'))})")
    result["primary_metric"] = primary
    result["primary"] = result["metrics"][primary]
    result["mode"] = "rank" if rank_ex and not gen_ex else ("generate" if gen_ex and not rank_ex else "mixed")
    result["model"] = getattr(lm, "name", "")
    result["model_location"] = getattr(lm, "location", "")
    result["model_kind"] = getattr(lm, "kind", "")
    result["adapter"] = getattr(lm, "adapter", None)
    cfg = asdict(config)
    cfg["stop"] = list(config.stop)
    result["config"] = cfg
    result["timings"] = {
        "seconds": round(seconds, 3),
        "examples_per_second": round(len(samples) / seconds, 3) if seconds > 0 else None,
        "n_sequences_scored": len(reqs) if rank_ex else 0,
        "n_forward": scorer.n_forward,
    }
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    result["samples"] = samples
    return result


def evaluate_task(model: Any, task: Task | Sequence[Example], config: EvalConfig | None = None,
                  out_dir: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate a model (a name/path, or a :class:`~insta.lm.LoadedModel`) on a task (or a list of Examples).

    Keyword overrides set :class:`EvalConfig` fields. With ``out_dir`` the results are written there
    (:func:`write_results`). Returns the results dict (per-sample records under ``"samples"``).
    """
    from .lm import LoadedModel, load_model

    config = apply_overrides(config or EvalConfig(), overrides, "evaluation")
    if isinstance(task, Task):
        task_id, catalog = task.id, task.catalog
        if not task.has_examples:
            raise InstaError(f"task {task.id!r} has no instances to evaluate (the catalog holds no data for it)")
        n = None
        if config.limit is not None and config.limit_per_template is None:
            n = config.limit
        examples = task.examples(n)
    else:
        examples = list(task)
        task_id = examples[0].provenance.get("task", "") if examples else ""
        catalog = ""
    if not examples:
        raise InstaError(f"task {task_id or '?'} has no instances to evaluate")
    t_load = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    load_s = time.perf_counter() - t_load
    result = evaluate_examples(lm, examples, config, task_id=task_id, catalog=catalog)
    result["timings"]["load_seconds"] = round(load_s, 3)
    if out_dir is not None:
        write_results(result, out_dir)
    return result


def task_slug(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", task_id).strip("_") or "task"


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<task>/results.json`` (without samples) and ``samples.jsonl``; returns the folder."""
    from .paths import atomic_write_json, atomic_write_text

    folder = Path(out_dir) / task_slug(result.get("task") or "task")
    body = {k: v for k, v in result.items() if k != "samples"}
    if result.get("samples") is not None and result.get("config", {}).get("samples", True):
        lines = [json.dumps(s, ensure_ascii=False) for s in result["samples"]]
        atomic_write_text(folder / "samples.jsonl", "\n".join(lines) + ("\n" if lines else ""))
        body["samples_file"] = str(folder / "samples.jsonl")
    atomic_write_json(folder / "results.json", body)
    return folder


def simple_evaluate(
    model: Any = "smollm2",
    tasks: Sequence[str | Task] = (),
    catalog: str | Any = "bigbench",
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    config: EvalConfig | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Load the model once and evaluate it on several tasks of a catalog (ids, or Task objects).

    Returns ``{"model": ..., "results": {task: results-without-samples}, "summary": {task: primary}}`` and
    writes each task's files plus ``<out_dir>/summary.json`` when ``out_dir`` is given.
    """
    from .lm import LoadedModel, load_model

    if not tasks:
        raise InstaError("no task to evaluate")
    config = apply_overrides(config or EvalConfig(), overrides, "evaluation")
    cat = None
    task_objs: list[Task] = []
    for t in tasks:
        if isinstance(t, Task):
            task_objs.append(t)
            continue
        if cat is None:
            if isinstance(catalog, str):
                from .catalogs import load_catalog

                cat = load_catalog(catalog, data_dir)
            else:
                cat = catalog
        task_objs.append(cat.get(t))
    t0 = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    load_s = time.perf_counter() - t0
    results: dict[str, Any] = {}
    for task in task_objs:
        res = evaluate_task(lm, task, config, out_dir=out_dir)
        results[task.id] = {k: v for k, v in res.items() if k != "samples"}
    summary = {
        "model": getattr(lm, "name", str(model)),
        "model_location": getattr(lm, "location", ""),
        "adapter": getattr(lm, "adapter", None),
        "load_seconds": round(load_s, 3),
        "summary": {tid: {"primary_metric": r["primary_metric"], "primary": r["primary"], "n": r["n"]}
                    for tid, r in results.items()},
        "results": results,
    }
    if out_dir is not None:
        from .paths import atomic_write_json

        atomic_write_json(Path(out_dir) / "summary.json", {k: v for k, v in summary.items() if k != "results"})
    return summary


__all__ = [
    "EvalConfig",
    "Scorer",
    "cut_at_stop",
    "evaluate_examples",
    "evaluate_task",
    "gold_label",
    "limit_examples",
    "simple_evaluate",
    "write_results",
]
