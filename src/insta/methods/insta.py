"""INSTA, in one place: :class:`Selector` (a catalog's instructions embedded once, scored against target
instructions by cosine similarity and :func:`~insta.selection.aggregation.aggregate`) and the selection methods
built on it: mean / max / top-k vote aggregation, an aligned encoder, and format-aware instructions
(:mod:`insta.taskformat`)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..catalogs.base import Catalog
from ..errors import InstaError
from ..records import Example, Task
from ..selection import (AGGREGATIONS, KRule, Scores, Selection, SelectionMethod, TextEncoder, aggregate,
                         clean_instructions, unit_rows)
from .resources import PoolCache, encoder_name, get_encoder


class Selector:
    """INSTA's engine: scores a catalog's tasks against target instructions with a sentence encoder.

    ``encoder``: an :class:`insta.encoder.Encoder` (or any object with ``encode`` and ``describe``), a name or
    directory, or a plain ``SentenceTransformer``. The catalog's instructions are embedded once (on first use,
    through the encoder's cache). ``texts_of`` (optional) maps a task to the texts to embed for its
    instructions, one per instruction (format-aware INSTA appends each instruction's output space,
    :mod:`insta.taskformat`).
    """

    def __init__(self, catalog: Catalog, encoder: TextEncoder | Any, aggregation: str = "mean", vote_depth: int = 10,
                 *, texts_of: Callable[[Task], list[str]] | None = None):
        if aggregation not in AGGREGATIONS:
            raise InstaError(f"unknown aggregation {aggregation!r} (choose from {', '.join(AGGREGATIONS)})")
        if len(catalog) == 0:
            raise InstaError(f"catalog {catalog.name!r} has no tasks")
        if isinstance(vote_depth, bool) or not isinstance(vote_depth, int) or vote_depth < 1:
            raise InstaError(f"vote depth must be a positive integer (got {vote_depth!r})")
        from ..encoder import as_text_encoder

        self.catalog = catalog
        self.encoder = as_text_encoder(encoder)
        self.aggregation = aggregation
        self.vote_depth = vote_depth
        self.texts_of = texts_of
        self._texts: list[str] = []
        self._owner: np.ndarray | None = None
        self._emb: np.ndarray | None = None
        self._bounds: np.ndarray | None = None
        self._task_ids = catalog.ids

    def _ensure_embedded(self) -> None:
        if self._emb is not None:
            return
        texts, owner = [], []
        for i, task in enumerate(self.catalog):
            shown = self.texts_of(task) if self.texts_of else task.instructions
            for text in shown:
                if text.strip():
                    texts.append(text)
                    owner.append(i)
        if not texts:
            raise InstaError(f"catalog {self.catalog.name!r} has no instructions")
        self._texts, self._owner = texts, np.asarray(owner, dtype=np.int64)
        self._emb = self.embed(texts)
        self._bounds = np.searchsorted(self._owner, np.arange(len(self._task_ids) + 1))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts`` (each distinct text encoded once), one row per text."""
        unique = list(dict.fromkeys(texts))
        emb = unit_rows(self.encoder.encode(unique))
        if len(unique) == len(texts):
            return emb
        where = {t: i for i, t in enumerate(unique)}
        return emb[[where[t] for t in texts]]

    @property
    def n_source_instructions(self) -> int:
        self._ensure_embedded()
        return len(self._texts)

    def similarity(self, target_instructions: Sequence[str]) -> np.ndarray:
        """Cosine matrix (target instructions x all source instructions)."""
        self._ensure_embedded()
        return self.embed(list(target_instructions)) @ self._emb.T

    def masked_similarity(self, target_instructions: Sequence[str], allowed: np.ndarray | None = None) -> np.ndarray:
        """:meth:`similarity` with the columns of tasks not ``allowed`` set to NaN (they take no part)."""
        sim = self.similarity(target_instructions)
        if allowed is not None and not np.all(allowed):
            sim[:, ~np.asarray(allowed, dtype=bool)[self._owner]] = np.nan
        return sim

    def aggregate(self, sim: np.ndarray, aggregation: str | None = None) -> np.ndarray:
        """Per catalog task: the score under ``aggregation`` (default this selector's) of a similarity matrix."""
        self._ensure_embedded()
        return aggregate(sim, self._owner, len(self._task_ids), aggregation or self.aggregation, self.vote_depth)

    def mean_cosine(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: the mean cosine over all (target, source) instruction pairs."""
        return self.aggregate(sim, "mean")

    def best_pair_cosine(self, sim: np.ndarray) -> np.ndarray:
        """Per catalog task: its closest (target, source) instruction pair's cosine."""
        return self.aggregate(sim, "max")

    def scores(self, target_instructions: Sequence[str] | str) -> dict[str, float]:
        """Aggregated score of every task in the catalog."""
        sim = self.similarity(clean_instructions(target_instructions))
        return dict(zip(self._task_ids, self.aggregate(sim).tolist()))

    def score(self, target_instructions: Sequence[str], allowed: np.ndarray | None = None,
              shown: Sequence[str] | None = None) -> Scores:
        """:class:`Scores` of every catalog task: the aggregation, its tie-breaker and each task's best pair.

        ``allowed`` masks the tasks that take no part (the leakage guard: they cast no top-k vote);
        ``shown`` are the target texts to report in the "why" (default: the instructions themselves).
        """
        instructions = list(target_instructions)
        sim = self.masked_similarity(instructions, allowed)
        primary = self.aggregate(sim)
        secondary_agg = "max" if self.aggregation == "mean" else "mean"
        secondary = self.aggregate(sim, secondary_agg)
        shown = list(shown or instructions)
        bounds, texts = self._bounds, self._texts

        def why(i: int) -> dict[str, Any]:
            block = sim[:, bounds[i]:bounds[i + 1]]
            if not block.size or np.all(np.isnan(block)):
                return {}
            r, c = np.unravel_index(int(np.nanargmax(block)), block.shape)
            return {"best_target_instruction": shown[r], "best_source_instruction": texts[bounds[i] + c],
                    "best_pair_cosine": float(block[r, c]), "mean_cosine": float(np.nanmean(block)),
                    "max_cosine": float(np.nanmax(block))}

        info = {"encoder": self.encoder.describe(), "aggregation": self.aggregation,
                "n_source_instructions": len(texts),
                **({"vote_depth": self.vote_depth} if self.aggregation == "topk-vote" else {})}
        return Scores(primary, secondary, "best-pair cosine" if secondary_agg == "max" else "mean cosine", why, info)

    def select(
        self,
        target_instructions: Sequence[str] | str,
        k: int | str | KRule = 5,
        *,
        exclude: Iterable[str] = (),
        exclude_families: Iterable[str] = (),
        target: dict[str, Any] | None = None,
        ties: str = "first",
    ) -> Selection:
        """The top ``k`` tasks for the target instructions, excluding the named tasks and families (the same
        :class:`SelectionMethod` path as ``load_method("insta-mean", ...)``, with this selector's encoder)."""
        method = InstaMethod(encoder=self.encoder, aggregation=self.aggregation, vote_depth=self.vote_depth)
        method.use_selector(self)
        return method.select(clean_instructions(target_instructions), self.catalog, k, exclude=exclude,
                             exclude_families=exclude_families, target_info=target, ties=ties)


def best_pair_lines(why: dict[str, Any]) -> list[str]:
    """INSTA's evidence in words: the best-matching (target instruction, source instruction) pair, its cosine."""
    if "best_source_instruction" not in why:
        return []
    return [f"{_short(why['best_target_instruction'])}\n~ {_short(why['best_source_instruction'])}  "
            f"({why['best_pair_cosine']:.3f})"]


def _short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


class InstaMethod(SelectionMethod):
    """INSTA (:class:`insta.methods.Selector`): instruction-embedding similarity with ``aggregation``.

    ``format_aware=True`` embeds every instruction with its output space (:mod:`insta.taskformat`) on both
    sides; a target whose output space is unknown (free text without examples) is scored on plain instructions.

    ``output_space_weight=w`` (beyond the paper; default 0) adds ``w`` times the cosine between the target's
    output space and each source's, embedded on their own (``Answer options: No | Yes.``), to the instruction
    score: the answer format as a second, separately weighted signal instead of text appended to every
    instruction. In cosine units for mean and max aggregation. A source whose output space is unknown gets the
    mean over the known ones (no push either way); a target whose output space is unknown is scored on
    instructions alone.
    """

    name = "insta-mean"
    consumes = ("instructions",)
    default_aggregation = "mean"
    default_format_aware = False
    shared_encoder = True

    @classmethod
    def why_lines(cls, why: dict[str, Any], n_samples: int | None = None) -> list[str]:
        return best_pair_lines(why) + super().why_lines(why, n_samples)

    def __init__(self, label: str | None = None, *, encoder: Any = None, aggregation: str | None = None,
                 vote_depth: int = 10, n_target_instructions: int | None = None, format_aware: bool | None = None,
                 output_space_weight: float = 0.0, **options: Any):
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
        if (isinstance(output_space_weight, bool) or not isinstance(output_space_weight, (int, float))
                or not output_space_weight >= 0):
            raise InstaError(f"method {self.name!r}: output_space_weight must be a number >= 0 "
                             f"(got {output_space_weight!r})")
        self.output_space_weight = float(output_space_weight)
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
        if self.output_space_weight:
            out["output_space_weight"] = self.output_space_weight
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
        if self.output_space_weight:
            sc = self._with_output_space(sc, target, pool, samples, allowed)
        return sc

    def _target_space(self, target: Task, samples: Sequence[Example]) -> str | None:
        """The target's output space (:func:`insta.taskformat.task_output_space`: every template, order-free),
        else one read from unlabelled samples with options."""
        from ..taskformat import target_output_space

        return target_output_space(target, samples)

    def _with_output_space(self, sc: Scores, target: Task, pool: Catalog, samples: Sequence[Example],
                           allowed: np.ndarray) -> Scores:
        """``sc`` with ``output_space_weight`` x the output-space cosine added to every allowed source's score."""
        from ..taskformat import embed_output_spaces, output_space_cosines, task_output_space

        space = self._target_space(target, samples)
        if space is None:
            sc.info["output_space"] = "the target's output space is unknown: instructions alone"
            return sc
        sources = [task_output_space(t) for t in pool]
        vectors = embed_output_spaces([space, *sources], get_encoder(self.encoder_name))
        cos = output_space_cosines(space, sources, vectors, allowed)
        score = np.where(allowed, sc.score + self.output_space_weight * cos, sc.score)
        base_why = sc.why

        def why(i: int) -> dict[str, Any]:
            return {**(base_why(i) if base_why else {}), "output_space": sources[i],
                    "output_space_cosine": round(float(cos[i]), 4), "instruction_score": float(sc.score[i])}

        info = {**sc.info, "output_space": space, "output_space_weight": self.output_space_weight}
        return Scores(score, sc.secondary, sc.secondary_name, why, info)


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
