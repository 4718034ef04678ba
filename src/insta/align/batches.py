"""Task-aware batches for in-batch contrastive alignment: no two instructions of one task in a batch, so none is
another's false negative (:class:`TaskAwareBatchSampler`)."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from ..errors import InstaError
from ..util.helpers import text_rng

class TaskAwareBatchSampler:
    """Batches of example indices in which no two examples share a group key (no same-task negatives).

    ``keys[i]`` is the set of keys of example ``i`` (for an instruction pair: the units of both texts); a batch
    only holds examples whose key sets are pairwise disjoint, so with ``MultipleNegativesRankingLoss`` every
    in-batch negative comes from another task. Each epoch reshuffles with ``seed + epoch``: units are drawn
    with probability proportional to what they have left, so big units spread over the epoch. Examples that
    would end up alone in a batch (only one unit left) are dropped for that epoch (``dropped`` says how many).

    Every epoch has the same number of batches (a Trainer counts its steps as epochs x batches per epoch): that
    of the shortest of the first ``epochs`` epochs. A longer epoch leaves out its smallest batches (the tail of
    the packing: a few pairs, counted in ``dropped``); a later epoch that packs into fewer halves its largest.
    Usable as a ``torch.utils.data.DataLoader(batch_sampler=...)``, and by ``SentenceTransformerTrainer``
    through :meth:`for_trainer`.
    """

    def __init__(self, keys: Sequence[Sequence[str] | str], batch_size: int, seed: int = 42, min_batch: int = 2,
                 epochs: int = 1):
        if batch_size < 1:
            raise InstaError("batch_size must be >= 1")
        self.keys = [frozenset([k]) if isinstance(k, str) else frozenset(k) for k in keys]
        self.batch_size = batch_size
        self.seed = seed
        self.min_batch = min_batch
        self.epoch = 0
        self.dropped = 0
        self._cache: dict[int, tuple[list[list[int]], int]] = {}
        self.n_batches = min(len(self._make(e)[0]) for e in range(max(1, epochs)))

    @classmethod
    def for_trainer(cls, keys: Sequence[Sequence[str] | str], dataset: Any = None, *, batch_size: int, seed: int = 0,
                    epochs: int = 1, **_trainer_kwargs: Any) -> "TaskAwareBatchSampler":
        """The ``batch_sampler`` callable of ``SentenceTransformerTrainingArguments`` (bind ``keys`` and ``epochs``
        with ``functools.partial``): the Trainer passes its dataset, batch size and seed."""
        return cls(keys, batch_size, seed=seed, epochs=epochs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        epoch = self.epoch if epoch is None else epoch
        if epoch not in self._cache:
            self._cache = {epoch: self._fit(*self._make(epoch))}
        batches, self.dropped = self._cache[epoch]
        return batches

    def _fit(self, batches: list[list[int]], dropped: int) -> tuple[list[list[int]], int]:
        """Exactly ``n_batches`` batches, in their order: leave out the smallest ones, or halve the largest."""
        batches = list(batches)
        while len(batches) > self.n_batches:
            dropped += len(batches.pop(min(range(len(batches)), key=lambda i: len(batches[i]))))
        while batches and len(batches) < self.n_batches:
            i = max(range(len(batches)), key=lambda i: len(batches[i]))
            if len(batches[i]) < 2:
                break
            big = batches[i]
            batches[i:i + 1] = [big[:len(big) // 2], big[len(big) // 2:]]
        return batches, dropped

    def _make(self, epoch: int) -> tuple[list[list[int]], int]:
        rng = text_rng(self.seed, "batches", epoch)
        buckets: dict[str, list[int]] = {}
        for i, ks in enumerate(self.keys):
            buckets.setdefault(min(ks) if ks else f"#{i}", []).append(i)
        for b in buckets.values():
            rng.shuffle(b)
        out: list[list[int]] = []
        dropped = 0
        while buckets:
            names = list(buckets)
            # weighted order without replacement (Efraimidis-Spirakis): bigger buckets come first more often
            order = sorted(names, key=lambda n: -(rng.random() ** (1.0 / len(buckets[n]))))
            batch, used = [], set()
            for name in order:
                bucket = buckets[name]
                for pos, idx in enumerate(bucket):
                    if not (self.keys[idx] & used):
                        batch.append(idx)
                        used |= self.keys[idx]
                        bucket.pop(pos)
                        break
                if not bucket:
                    del buckets[name]
                if len(batch) == self.batch_size:
                    break
            if len(batch) >= self.min_batch:
                out.append(batch)
            else:
                dropped += len(batch)
                if not batch:  # nothing placeable (cannot happen with non-empty buckets); stop safely
                    dropped += sum(map(len, buckets.values()))
                    break
        return out, dropped

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return self.n_batches
