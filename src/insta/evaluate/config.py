"""The evaluation's knobs: :class:`EvalConfig` lives in :mod:`insta.eval_config` (light, read by the CLI)."""
from __future__ import annotations

from ..eval_config import CALIBRATIONS, GEN_METRICS, MODES, EvalConfig

__all__ = ["CALIBRATIONS", "GEN_METRICS", "MODES", "EvalConfig"]
