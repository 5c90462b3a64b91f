"""Where tasks come from: fixed lists, procedural generators and datasets, behind one `sample(rng)`.

An environment draws its next task with `source.sample(rng)` from Gymnasium's seeded
`np_random`, so that `reset(seed=s)` always gives the same task. Sources also serve a task by
index (`source.get(i)`) for evaluation and for GRPO groups that must share a task. This module
loads data; it must not know about tokenizers, verifiers or environments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from llmenv.errors import DatasetUnavailableError, TaskConfigError
from llmenv.hub import hub_reachable
from llmenv.types import Task


class TaskSource(Protocol):
    """Something an environment can draw tasks from."""

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw one task using `rng` (deterministic given the generator's state)."""
        ...

    def get(self, index: int) -> Task:
        """The task at `index` (procedural sources generate it from a generator seeded by index)."""
        ...


class SequenceSource:
    """A fixed, finite list of tasks."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)
        if not self.tasks:
            raise TaskConfigError("a task source needs at least one Task, got an empty sequence")
        bad = [i for i, t in enumerate(self.tasks) if not isinstance(t, Task)]
        if bad:
            raise TaskConfigError(
                f"task source items must be llmenv.Task; item {bad[0]} is {type(self.tasks[bad[0]]).__name__}"
            )

    def __len__(self) -> int:
        return len(self.tasks)

    def sample(self, rng: np.random.Generator) -> Task:
        """A uniformly drawn task."""
        return self.tasks[int(rng.integers(len(self.tasks)))]

    def get(self, index: int) -> Task:
        """The task at `index`."""
        return self.tasks[index]


class ProceduralSource:
    """Tasks generated on demand by `fn(rng, **params) -> Task`."""

    def __init__(self, fn: Callable[..., Task], params: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.params = dict(params or {})
        try:  # fail at construction, not at the first reset, on an unknown or bad parameter
            probe = fn(np.random.default_rng(0), **self.params)
        except TypeError as exc:
            raise TaskConfigError(f"{getattr(fn, '__name__', fn)!s} rejected parameters {self.params}: {exc}") from exc
        if not isinstance(probe, Task):
            raise TaskConfigError(
                f"procedural source {getattr(fn, '__name__', fn)!s} must return llmenv.Task, got {type(probe).__name__}"
            )

    def sample(self, rng: np.random.Generator) -> Task:
        """A freshly generated task."""
        return self.fn(rng, **self.params)

    def get(self, index: int) -> Task:
        """The task generated from a generator seeded with `index`."""
        return self.fn(np.random.default_rng(index), **self.params)


class DatasetSource:
    """Rows of a `datasets.Dataset` (or any sized, indexable table) turned into tasks by `row_to_task(row)`."""

    def __init__(self, dataset: Any, row_to_task: Callable[[Mapping[str, Any]], Task]) -> None:
        if len(dataset) == 0:
            raise TaskConfigError("the dataset has no rows")
        self.dataset = dataset
        self.row_to_task = row_to_task

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, rng: np.random.Generator) -> Task:
        """The task of a uniformly drawn row."""
        return self.get(int(rng.integers(len(self.dataset))))

    def get(self, index: int) -> Task:
        """The task of row `index`."""
        row = self.dataset[index]
        try:
            task = self.row_to_task(row)
        except (KeyError, ValueError, TypeError) as exc:
            raise TaskConfigError(
                f"row {index} could not be turned into a Task ({exc!r}); row keys: {list(row)}"
            ) from exc
        if not isinstance(task, Task):
            raise TaskConfigError(f"row_to_task must return llmenv.Task, got {type(task).__name__}")
        return task


HUB_DATASET_PARAMS = frozenset({"data_files", "split", "limit"})
"""The task parameters of a dataset-backed task (the keywords of `HubDataset.load`)."""

_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the Hugging Face Hub (or local files standing in for it) plus its row converter.

    `load(data_files=..., split=..., limit=...)` returns a `DatasetSource`. With `data_files`
    (a path or list of paths to JSON/JSONL/Parquet/CSV) nothing is fetched; without it the Hub
    is asked through `datasets.load_dataset`, and an unreachable Hub fails at once with a
    message saying how to point at local files.
    """

    path: str
    row_to_task: Callable[[Mapping[str, Any]], Task]
    name: str | None = None
    split: str = "test"
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def load(
        self,
        *,
        data_files: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        split: str | None = None,
        limit: int | None = None,
    ) -> DatasetSource:
        """Load the rows and wrap them as a task source."""
        import datasets  # heavy; only dataset-backed tasks need it

        if data_files is not None:
            files = [os.fspath(f) for f in ([data_files] if isinstance(data_files, (str, os.PathLike)) else data_files)]
            missing = [f for f in files if not os.path.exists(f)]
            if missing:
                raise DatasetUnavailableError(f"data_files not found: {missing}")
            exts = {os.path.splitext(f)[1].lower() for f in files}
            if len(exts) != 1 or next(iter(exts)) not in _LOCAL_FORMATS:
                raise DatasetUnavailableError(
                    f"data_files must all be one of {sorted(_LOCAL_FORMATS)}; got extensions {sorted(exts)}"
                )
            empty = [f for f in files if os.path.getsize(f) == 0]
            if empty:  # datasets' builders raise a bare StopIteration on these
                raise DatasetUnavailableError(f"data_files {empty} are empty; expected rows of {self.path}")
            dataset = datasets.load_dataset(_LOCAL_FORMATS[exts.pop()], data_files=files, split="train")
        else:
            if not hub_reachable():
                raise DatasetUnavailableError(
                    f"cannot load `{self.path}` from the Hugging Face Hub: it is unreachable from this machine. "
                    f"Pass data_files='path/to/{self.path.rsplit('/', 1)[-1]}.jsonl' (JSON, JSONL, Parquet or CSV "
                    "with the same columns as the Hub dataset)."
                )
            try:
                dataset = datasets.load_dataset(self.path, self.name, split=split or self.split, **self.load_kwargs)
            except (ConnectionError, OSError, ValueError) as exc:
                raise DatasetUnavailableError(f"could not load `{self.path}` from the Hub: {exc}") from exc
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        return DatasetSource(dataset, self.row_to_task)


def as_source(
    source: Any,
    params: Mapping[str, Any] | None = None,
    row_to_task: Callable[[Mapping[str, Any]], Task] | None = None,
) -> TaskSource:
    """Turn what `register_task` was given (tasks, a generator, a dataset, a source) into a source."""
    params = dict(params or {})
    if row_to_task is not None:
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise TaskConfigError(
                f"row_to_task needs a datasets.Dataset (or sized table) source, got {type(source).__name__}"
            )
        if params:
            raise TaskConfigError(f"unexpected task parameters {sorted(params)} for a dataset source")
        return DatasetSource(source, row_to_task)
    if isinstance(source, HubDataset):
        unknown = sorted(set(params) - HUB_DATASET_PARAMS)
        if unknown:
            raise TaskConfigError(
                f"unexpected task parameters {unknown} for a dataset task; expected {sorted(HUB_DATASET_PARAMS)}"
            )
        return source.load(**params)
    if isinstance(source, Task):
        source = [source]
    if hasattr(source, "sample") and hasattr(source, "get"):
        if params:
            raise TaskConfigError(f"unexpected task parameters {sorted(params)} for a ready-made source")
        return source
    if isinstance(source, Sequence) and not isinstance(source, str):
        if params:
            raise TaskConfigError(f"unexpected task parameters {sorted(params)} for a fixed list of tasks")
        return SequenceSource(source)
    if callable(source):
        return ProceduralSource(source, params)
    raise TaskConfigError(
        "source must be a sequence of Task, a callable (rng, **params) -> Task, a HubDataset, "
        f"or an object with sample(rng) and get(index); got {type(source).__name__}"
    )
