"""The Catalog: an ordered, id-indexed collection of Tasks from one meta-dataset."""
from __future__ import annotations

import difflib
from typing import Iterable, Iterator

from ..errors import InstaError, UnknownTaskError
from ..records import Task


class Catalog:
    """Tasks of one meta-dataset, looked up by id (or an alias such as a T0 dataset name).

    A catalog is plain data: build one from any list of Tasks, or load an upstream layout with
    :func:`insta.catalogs.load_catalog`.
    """

    def __init__(self, name: str, tasks: Iterable[Task], aliases: dict[str, str] | None = None):
        self.name = name
        self._tasks: dict[str, Task] = {}
        for task in tasks:
            if task.id in self._tasks:
                raise InstaError(f"catalog {name!r}: duplicate task id {task.id!r}")
            self._tasks[task.id] = task
        self.aliases = {a: t for a, t in (aliases or {}).items() if t in self._tasks}

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and (task_id in self._tasks or task_id in self.aliases)

    @property
    def ids(self) -> list[str]:
        return list(self._tasks)

    def resolve(self, task_id: str) -> str:
        """The canonical id for an id or alias; a clear error with close matches otherwise."""
        if task_id in self._tasks:
            return task_id
        if task_id in self.aliases:
            return self.aliases[task_id]
        close = difflib.get_close_matches(task_id, list(self._tasks) + list(self.aliases), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownTaskError(f"unknown task {task_id!r} in catalog {self.name!r}{hint}")

    def get(self, task_id: str) -> Task:
        return self._tasks[self.resolve(task_id)]

    def __getitem__(self, task_id: str) -> Task:
        return self.get(task_id)

    def family_of(self, task_id: str) -> str:
        return self.get(task_id).family

    def members(self, family: str) -> list[str]:
        """Ids of every task in a family (a BIG-bench parent and its subtasks, a dataset and its subsets)."""
        return [t.id for t in self if t.family == family]

    def pool(self, name: str) -> list[str]:
        """Ids of the tasks in a named pool (e.g. ``t0_train``); an error for an unknown pool."""
        ids = [t.id for t in self if name in t.pools]
        if not ids:
            known = sorted({p for t in self for p in t.pools})
            raise InstaError(f"catalog {self.name!r} has no pool {name!r} (known: {', '.join(known) or 'none'})")
        return ids

    def subset(self, task_ids: Iterable[str], name: str | None = None) -> "Catalog":
        """A new catalog holding only the given tasks (ids or aliases), in catalog order."""
        wanted = {self.resolve(t) for t in task_ids}
        return Catalog(name or self.name, [t for t in self if t.id in wanted], self.aliases)

    def without(self, task_ids: Iterable[str] = (), families: Iterable[str] = ()) -> "Catalog":
        """A new catalog without the given tasks and every task of the given families."""
        drop_fam = set(families)
        drop = set()
        for t in task_ids:
            tid = self.resolve(t) if t in self else t
            drop.add(tid)
        return Catalog(self.name, [t for t in self if t.id not in drop and t.family not in drop_fam], self.aliases)

    def merged(self, other: "Catalog", name: str | None = None) -> "Catalog":
        """Both catalogs' tasks (ids must not clash)."""
        return Catalog(name or f"{self.name}+{other.name}", list(self) + list(other), {**self.aliases, **other.aliases})

    def n_instructions(self) -> int:
        return sum(len(t.instructions) for t in self)


def read_json_file(path, what: str):
    """Parse a JSON file, turning unreadable or malformed files into one-line errors naming ``what`` and the path."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as err:
        raise InstaError(f"malformed {what} file {path}: {err}") from None
    except RecursionError:
        raise InstaError(f"malformed {what} file {path}: nested too deeply") from None
    except OSError as err:
        raise InstaError(f"cannot read {what} file {path}: {err}") from None
