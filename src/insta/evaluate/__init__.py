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

The stages: :mod:`.config` (:class:`EvalConfig`), :mod:`.scoring` (:class:`Scorer`: batched log-likelihoods and
greedy generations), :mod:`.prompting` (gold labels, content-free prompts, stop strings, limits), :mod:`.results`
(metrics per template and averaged, result files) and :mod:`.runner` (:func:`evaluate_examples`,
:func:`evaluate_task`, :func:`simple_evaluate`).
"""
from __future__ import annotations

from ..eval_config import CALIBRATIONS, GEN_METRICS, MODES, EvalConfig
from .prompting import content_free_prompt, cut_at_stop, gold_label, limit_examples, template_of
from .results import task_slug, write_results
from .runner import evaluate_examples, evaluate_task, simple_evaluate
from .scoring import Scorer

__all__ = [
    "CALIBRATIONS",
    "EvalConfig",
    "GEN_METRICS",
    "MODES",
    "Scorer",
    "content_free_prompt",
    "cut_at_stop",
    "evaluate_examples",
    "evaluate_task",
    "gold_label",
    "limit_examples",
    "simple_evaluate",
    "task_slug",
    "template_of",
    "write_results",
]
