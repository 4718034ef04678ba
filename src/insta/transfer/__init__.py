"""Measured source-to-target transfer, and selection methods scored against it (``insta transfer``).

    from insta.transfer import load_transfer_config, run_transfer, read_matrix, evaluate_methods_on_matrix
    result = run_transfer(load_transfer_config("configs/transfer-bigbench-smollm2.yaml"))
"""
from __future__ import annotations

from .cells import METRICS, PRIMARY
from .config import TransferConfig, config_from_dict, load_transfer_config
from .matrix import TransferMatrix, read_matrix, reliability
from .methods_vs_matrix import evaluate_methods_on_matrix
from .run import plan_transfer, run_transfer
from .scoring import ndcg, regret_at_k, score_rankings

__all__ = [
    "METRICS", "PRIMARY", "TransferConfig", "TransferMatrix", "config_from_dict", "evaluate_methods_on_matrix",
    "load_transfer_config", "ndcg", "plan_transfer", "read_matrix", "regret_at_k", "reliability", "run_transfer",
    "score_rankings",
]
