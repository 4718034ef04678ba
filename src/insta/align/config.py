"""The configuration of an INSTA-aligned run (:class:`AlignConfig`: the authors' recipe by default) and the names
of the files an alignment writes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..errors import InstaError
from ..util.options import option

METADATA_FILE = "insta_alignment.json"
WORK_DIR = ".insta-align"
FORMAT_VERSION = 1
OBJECTIVES = ("cosine", "mnrl")
UNITS = ("family", "task")
#: Pools that hold evaluation targets; their tasks (and families) never feed alignment by default.
EVAL_POOLS = ("t0_eval", "eval", "test")


_GUARD = "leakage guard"


@dataclass
class AlignConfig:
    """Every knob of an alignment run; the defaults are the authors' recipe (METHOD.md §2).

    ``learning_rate=None`` means the objective's default: 1e-6 for ``cosine`` (the paper), 2e-5 for ``mnrl``
    (the usual contrastive fine-tuning rate; 1e-6 barely moves the model in a few dozen steps).
    """

    base_encoder: str = option("all-MiniLM-L6-v2", "base encoder: name, hub id or directory")
    objective: str = option("cosine", "cosine: the authors' CosineSimilarityLoss on labelled pairs; mnrl: "
                            "MultipleNegativesRankingLoss with a task-aware batch sampler", choices=OBJECTIVES)
    # data
    pool: str | None = option(None, "restrict the catalog to this pool first (e.g. t0_train)")
    unit: str = option("family", "what one task is: a family (P3 dataset, BIG-bench parent + subtasks) or a task "
                       "id", choices=UNITS)
    default_exclusions: bool = option(True, "drop evaluation pools and BBH parents (--no-default-exclusions leaks "
                                      "targets into the encoder)", _GUARD)
    exclude_tasks: list[str] = option([], "task ids to keep out of alignment (--exclude, repeatable)", _GUARD)
    exclude_families: list[str] = option([], "families to keep out (--exclude-family, repeatable)", _GUARD)
    heldout_fraction: float = option(0.2, "instructions held out for eval-selection", _GUARD)
    dev_fraction: float = option(0.1, "instructions held out for the dev Pearson (best-epoch choice)", _GUARD)
    # pairs (authors' recipe)
    positive_fraction: float = option(0.4, "share of same-task pairs kept", "pairs")
    negative_threshold: float = option(0.3, "negatives have base cosine below this", "pairs")
    max_negative_reuse: int = option(4, "times one text may serve as a negative", "pairs")
    max_positive_pairs_per_unit: int | None = option(None, "cap on positive pairs per task before sampling (default "
                                                     "none; use e.g. 100 for BIG-bench)", "pairs")
    # training
    epochs: int = option(5, "training epochs", "training")
    batch_size: int = option(16, "pairs per batch", "training")
    learning_rate: float | None = option(None, "learning rate (default 1e-6 for cosine, 2e-5 for mnrl)", "training")
    warmup_ratio: float = option(0.1, "warm-up steps as a share of one epoch", "training")
    weight_decay: float = option(0.01, "AdamW weight decay", "training")
    max_grad_norm: float = option(1.0, "gradient clipping norm", "training")
    max_seq_length: int | None = option(128, "token limit while training (the saved model keeps its own)",
                                        "training")
    mnrl_scale: float = option(20.0, "MNRL similarity scale", "training")
    select_best: bool = option(True, "keep the epoch with the best dev Pearson (--no-select-best or --last-epoch: "
                               "the last)", "training")
    seed: int = option(42, "random seed", "training")
    # runtime (not part of the run's identity)
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)", "training")
    device: str | None = option(None, "torch device (default cpu)", "training")
    progress: bool = option(True, "progress bars (--no-progress: none; also --quiet)")
    keep_checkpoints: bool = option(False, "keep the Trainer's epoch checkpoints (DIR/.insta-align/) after finishing")

    RUNTIME_FIELDS = ("threads", "device", "progress", "keep_checkpoints")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 1e-6 if self.objective == "cosine" else 2e-5

    def validate(self) -> None:
        from ..util.options import check_types

        check_types(self, "alignment")
        if self.objective not in OBJECTIVES:
            raise InstaError(f"unknown objective {self.objective!r} (choose from {', '.join(OBJECTIVES)})")
        if self.unit not in UNITS:
            raise InstaError(f"unknown unit {self.unit!r} (choose from {', '.join(UNITS)})")
        for name in ("heldout_fraction", "dev_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise InstaError(f"{name} must be in [0, 1), got {v}")
        if self.heldout_fraction + self.dev_fraction >= 1.0:
            raise InstaError("heldout_fraction + dev_fraction must be below 1")
        if not 0.0 < self.positive_fraction <= 1.0:
            raise InstaError(f"positive_fraction must be in (0, 1], got {self.positive_fraction}")
        if not -1.0 <= self.negative_threshold <= 1.0:
            raise InstaError(f"negative_threshold must be a cosine in [-1, 1], got {self.negative_threshold}")
        ints = {"max_negative_reuse": 0, "epochs": 1, "batch_size": 2 if self.objective == "mnrl" else 1}
        for name, low in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise InstaError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.max_positive_pairs_per_unit is not None and self.max_positive_pairs_per_unit < 1:
            raise InstaError("max_positive_pairs_per_unit must be >= 1")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise InstaError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio <= 10:
            raise InstaError(f"warmup_ratio must be >= 0, got {self.warmup_ratio}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["learning_rate_effective"] = self.lr
        return d

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (runtime knobs left out)."""
        d = self.to_dict()
        for name in self.RUNTIME_FIELDS:
            d.pop(name, None)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AlignConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"learning_rate_effective"})
        if unknown:
            raise InstaError(f"unknown alignment option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})
