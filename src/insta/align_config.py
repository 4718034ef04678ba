"""The configuration of an INSTA-aligned run (:class:`AlignConfig`: the authors' recipe by default) and the names
of the files an alignment writes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .errors import InstaError

METADATA_FILE = "insta_alignment.json"
WORK_DIR = ".insta-align"
FORMAT_VERSION = 1
OBJECTIVES = ("cosine", "mnrl")
UNITS = ("family", "task")
#: Pools that hold evaluation targets; their tasks (and families) never feed alignment by default.
EVAL_POOLS = ("t0_eval", "eval", "test")


@dataclass
class AlignConfig:
    """Every knob of an alignment run; the defaults are the authors' recipe (METHOD.md §2).

    ``learning_rate=None`` means the objective's default: 1e-6 for ``cosine`` (the paper), 2e-5 for ``mnrl``
    (the usual contrastive fine-tuning rate; 1e-6 barely moves the model in a few dozen steps).
    """

    base_encoder: str = "all-MiniLM-L6-v2"
    objective: str = "cosine"
    # data
    pool: str | None = None  # restrict the catalog to this pool first (e.g. t0_train)
    unit: str = "family"  # what counts as "one task": a family (dataset, BIG-bench parent) or a task id
    default_exclusions: bool = True  # drop evaluation pools (+ BBH parents for BIG-bench)
    exclude_tasks: list[str] = field(default_factory=list)
    exclude_families: list[str] = field(default_factory=list)
    heldout_fraction: float = 0.2  # instructions kept out for the identification test
    dev_fraction: float = 0.1  # instructions kept out for the dev Pearson (best-epoch choice)
    # pairs (authors' recipe)
    positive_fraction: float = 0.4
    negative_threshold: float = 0.3
    max_negative_reuse: int = 4
    max_positive_pairs_per_unit: int | None = None  # cap for huge families (BIG-bench list_functions ...)
    # training
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float | None = None
    warmup_ratio: float = 0.1  # of one epoch's steps
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_seq_length: int | None = 128  # tokens, during training only (the saved model keeps its own)
    mnrl_scale: float = 20.0
    select_best: bool = True  # keep the epoch with the best dev Pearson (else the last)
    seed: int = 42
    # runtime (not part of the run's identity)
    threads: int | None = None
    device: str | None = None
    progress: bool = True
    keep_checkpoints: bool = False

    RUNTIME_FIELDS = ("threads", "device", "progress", "keep_checkpoints")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 1e-6 if self.objective == "cosine" else 2e-5

    def validate(self) -> None:
        from .options import check_types

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
