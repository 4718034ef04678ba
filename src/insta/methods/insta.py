"""INSTA and its variants as selection methods: mean / max / top-k vote aggregation, an aligned encoder, and
format-aware instructions (:mod:`insta.taskformat`)."""
from __future__ import annotations

from typing import Any, Sequence

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Example, Task
from ..selection import AGGREGATIONS, SelectionMethod, Selector, clean_instructions
from .resources import PoolCache, encoder_name, get_encoder


class InstaMethod(SelectionMethod):
    """INSTA (:class:`insta.selection.Selector`): instruction-embedding similarity with ``aggregation``.

    ``format_aware=True`` embeds every instruction with its output space (:mod:`insta.taskformat`) on both
    sides; a target whose output space is unknown (free text without examples) is scored on plain instructions.
    """

    name = "insta-mean"
    consumes = ("instructions",)
    default_aggregation = "mean"
    default_format_aware = False
    shared_encoder = True

    def __init__(self, label: str | None = None, *, encoder: Any = None, aggregation: str | None = None,
                 vote_depth: int = 10, n_target_instructions: int | None = None, format_aware: bool | None = None,
                 **options: Any):
        super().__init__(label, **options)
        self.encoder_name = encoder
        self.aggregation = aggregation or self.default_aggregation
        if self.aggregation not in AGGREGATIONS:
            raise InstaError(f"method {self.name!r}: unknown aggregation {self.aggregation!r} "
                             f"(choose from {', '.join(AGGREGATIONS)})")
        if isinstance(vote_depth, bool) or not isinstance(vote_depth, int) or vote_depth < 1:
            raise InstaError(f"method {self.name!r}: vote_depth must be a positive integer (got {vote_depth!r})")
        if n_target_instructions is not None and (isinstance(n_target_instructions, bool)
                                                  or not isinstance(n_target_instructions, int)
                                                  or n_target_instructions < 1):
            raise InstaError(f"method {self.name!r}: n_target_instructions must be a positive integer")
        self.vote_depth = vote_depth
        self.n_target_instructions = n_target_instructions
        self.format_aware = self.default_format_aware if format_aware is None else bool(format_aware)
        self._selectors: PoolCache[Selector] = PoolCache()

    def params(self) -> dict[str, Any]:
        out = {"encoder": self._encoder_identity(), "aggregation": self.aggregation}
        if self.aggregation == "topk-vote":
            out["vote_depth"] = self.vote_depth
        if self.n_target_instructions:
            out["n_target_instructions"] = self.n_target_instructions
        if self.format_aware:
            out["format_aware"] = True
        return out

    def _encoder_identity(self) -> str:
        return encoder_name(self.encoder_name)

    def use_selector(self, selector: Selector) -> None:
        """Score with an existing selector (its catalog's embeddings are reused)."""
        self._selectors.put(selector.catalog, selector, key=selector.texts_of is not None)

    def _selector(self, pool: Catalog, formatted: bool) -> Selector:
        def build() -> Selector:
            from ..taskformat import format_aware_texts

            return Selector(pool, get_encoder(self.encoder_name), self.aggregation, self.vote_depth,
                            texts_of=format_aware_texts if formatted else None)

        return self._selectors.get(pool, build, key=formatted)

    def target_texts(self, target: Task, samples: Sequence[Example] = ()) -> tuple[list[str], bool]:
        """The target's instructions (the first ``n_target_instructions``) as embedded, and whether they carry
        their output space (format-aware with a known target format)."""
        instructions = clean_instructions(target.instructions)
        if self.n_target_instructions:
            instructions = instructions[: self.n_target_instructions]
        if not self.format_aware:
            return instructions, False
        from ..taskformat import output_spaces, with_output_space

        spaces = dict(zip((i.strip() for i in target.instructions), output_spaces(target)))
        if not any(spaces.get(i) for i in instructions) and samples and all(s.options for s in samples):
            probe = Task(id=target.id, instructions=instructions, catalog="", loader=lambda: iter(samples))
            spaces = dict(zip(instructions, output_spaces(probe)))
        if not any(spaces.get(i) for i in instructions):
            return instructions, False
        return [with_output_space(i, spaces.get(i)) for i in instructions], True

    def _score(self, target, pool, samples, allowed):
        texts, formatted = self.target_texts(target, samples)
        sc = self._selector(pool, formatted).score(texts, allowed)
        if self.format_aware:
            sc.info["format_aware"] = ("instructions with their output space" if formatted else
                                       "the target's output space is unknown: plain instructions")
        return sc


class InstaMaxMethod(InstaMethod):
    name = "insta-max"
    default_aggregation = "max"


class InstaVoteMethod(InstaMethod):
    name = "insta-topk-vote"
    default_aggregation = "topk-vote"


class InstaFormatMethod(InstaMethod):
    """Format-aware INSTA (mean aggregation by default): instructions embedded with their output space."""

    name = "insta-format"
    default_format_aware = True


class InstaAlignedMethod(InstaMethod):
    """INSTA with an aligned encoder; the authors pair it with top-k vote (METHOD.md §1)."""

    name = "insta-aligned"
    default_aggregation = "topk-vote"
    shared_encoder = False

    def __init__(self, label: str | None = None, *, encoder: Any = None, **options: Any):
        if not encoder:
            raise InstaError("method 'insta-aligned' needs an encoder: the directory written by `insta align`")
        super().__init__(label, encoder=encoder, **options)

    def _encoder_identity(self) -> str:
        from pathlib import Path

        from ..encoder import model_fingerprint

        if not isinstance(self.encoder_name, str):
            return encoder_name(self.encoder_name)
        p = Path(self.encoder_name).expanduser()
        if not p.is_dir():
            raise InstaError(f"insta-aligned: encoder directory {self.encoder_name!r} does not exist "
                             "(train it with `insta align`)")
        return f"{p.name}-{model_fingerprint(str(p.resolve()))}"
