"""Measured source-to-target transfer, and selection methods scored against it (``insta transfer``).

    from insta.transfer import load_transfer_config, run_transfer, read_matrix, evaluate_methods_on_matrix
    result = run_transfer(load_transfer_config("configs/transfer-bigbench-smollm2.yaml"))

The run stands on the run engine (:mod:`insta.engine`): :mod:`.runner` says what to run (one model per source
and seed, its keys and jobs), :mod:`.measure` runs it and writes the outputs (:mod:`.results`, :mod:`.report`);
:mod:`.methods_vs_matrix` scores selection methods against the matrix; :mod:`.screen` is the learnability
screen. The matrix itself (format, cell metrics, NDCG / Regret@k, the prior) is :mod:`insta.matrix`.
"""
from __future__ import annotations

from ..matrix import METRICS, PRIMARY, TransferMatrix, ndcg, read_matrix, regret_at_k, reliability, score_rankings
from .config import TransferConfig, config_from_dict, load_transfer_config
from .measure import plan_transfer, run_transfer
from ..evaluators.methods_vs_matrix import evaluate_methods_on_matrix
from .runner import TransferRun

__all__ = [
    "METRICS", "PRIMARY", "TransferConfig", "TransferMatrix", "TransferRun", "config_from_dict",
    "evaluate_methods_on_matrix", "load_transfer_config", "ndcg", "plan_transfer", "read_matrix", "regret_at_k",
    "reliability", "run_transfer", "score_rankings",
]
