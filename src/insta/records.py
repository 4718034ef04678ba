"""The common record forms every catalog produces: a Task (id, instructions, metadata) and its Examples."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import InstaError


@dataclass
class Example:
    """One instance of a task, in the form training and evaluation share.

    ``input`` is the text the model sees (already rendered with the task's instruction where the format
    defines how, e.g. a P3 template); ``references`` are the acceptable outputs; ``options`` are the answer
    options for rank classification (``label`` indexes the gold one, ``None`` for generation tasks).
    ``provenance`` says where the example came from (file, index, template, ...).
    """

    id: str
    input: str
    references: list[str]
    options: list[str] | None = None
    label: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The output to train on: the gold option if any, else the first reference."""
        if self.options is not None and self.label is not None:
            return self.options[self.label]
        return self.references[0] if self.references else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "input": self.input,
            "references": list(self.references),
            "options": None if self.options is None else list(self.options),
            "label": self.label,
            "provenance": dict(self.provenance),
        }


@dataclass
class Task:
    """A task of a meta-dataset: an id, its instructions and metadata, and lazy access to its examples.

    ``family`` groups tasks that must be excluded together (a BIG-bench parent and its subtasks, a dataset
    and its subsets); ``pools`` names the split lists the task belongs to (e.g. ``t0_train``, ``t0_eval``).
    """

    id: str
    instructions: list[str]
    catalog: str
    family: str = ""
    category: str = ""
    keywords: list[str] = field(default_factory=list)
    language: str = "en"
    pools: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)
    loader: Callable[[], Iterator[Example]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.family:
            self.family = self.id

    @property
    def has_examples(self) -> bool:
        return self.loader is not None

    def iter_examples(self) -> Iterator[Example]:
        """Yield the task's examples; an empty iterator when the catalog has no instances for it."""
        if self.loader is None:
            return iter(())
        return self.loader()

    def examples(self, limit: int | None = None) -> list[Example]:
        """The first ``limit`` examples (all when ``None``)."""
        if limit is not None and limit < 0:
            raise InstaError(f"the number of examples must be >= 0 (got {limit})")
        out: list[Example] = []
        for ex in self.iter_examples():
            if limit is not None and len(out) >= limit:
                break
            out.append(ex)
        return out

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (no examples)."""
        return {
            "id": self.id,
            "catalog": self.catalog,
            "family": self.family,
            "category": self.category,
            "keywords": list(self.keywords),
            "language": self.language,
            "pools": sorted(self.pools),
            "n_instructions": len(self.instructions),
            "instructions": list(self.instructions),
            "has_examples": self.has_examples,
            **({"meta": self.meta} if self.meta else {}),
        }
