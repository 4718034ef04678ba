"""The evaluation's knobs (:class:`EvalConfig`) and the names it accepts; outside the evaluate package so that
the CLI builds its flags from it without importing numpy (re-exported as :mod:`insta.eval_config`)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InstaError
from .util.options import option

GEN_METRICS = ("rouge_l", "exact_match")
MODES = ("auto", "rank", "generate")
CALIBRATIONS = ("auto", "fixed", "unconditional", "none")


@dataclass
class EvalConfig:
    """Every knob of an evaluation."""

    mode: str = option("auto", "auto: rank classification where examples have options, generation elsewhere",
                       choices=MODES)
    limit: int | None = option(None, "first N examples of each task", minimum=1)
    limit_per_template: int | None = option(None, "first N examples of each template (T0-style tasks)", minimum=1)
    batch_size: int = option(8, "sequences per forward pass", minimum=1)
    share_prefix: bool = option(True, "causal LMs: run a prompt once for all its options (packed forward passes, "
                                "or its KV cache), not once per option")
    primary_metric: str | None = option(None, "headline metric (default acc; rouge_l / exact_match for generation)")
    calibration: str = option("auto", "content-free prompt for acc_calibrated (unconditional = lm-eval's "
                              "acc_mutual_info)", choices=CALIBRATIONS)
    content_free_input: str = option("N/A", "the content-free input of fixed calibration")
    content_free_prompt: str = option("Q: N/A\nA: ", "the content-free prompt of fixed calibration")
    max_source_length: int = option(1024, "prompt tokens kept (causal: the end; seq2seq: the start)", minimum=1)
    max_new_tokens: int = option(32, "generation: new tokens at most", minimum=1)
    stop: tuple[str, ...] = option(("\n",), "stop string for generation (repeatable)")
    average_over_templates: bool | None = option(None, "average a task's metrics over its templates (default: when "
                                                 "the examples carry 2+ template ids)")
    samples: bool = option(True, "write per-sample records (samples.jsonl)")
    progress: bool = option(True, "progress bars (--no-progress: none; also --quiet)")

    def validate(self) -> None:
        from .metrics import LEGACY_RANK_METRICS, RANK_METRICS  # numpy: not at import (the CLI's parser reads this)

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
