"""The evaluation's knobs (:class:`EvalConfig`) and the names it accepts."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InstaError
from ..metrics import LEGACY_RANK_METRICS, RANK_METRICS

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
