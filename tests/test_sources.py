"""llmenv.sources: lists, generators and datasets behind one `sample(rng)`/`get(index)`, with clear errors.

The Hub is not reachable from CI: HubDataset runs on local JSONL/CSV files written to tmp_path,
and its Hub path on a stand-in for `datasets.load_dataset`.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from llmenv import sources
from llmenv.errors import DatasetUnavailableError, TaskConfigError
from llmenv.sources import DatasetSource, HubDataset, ProceduralSource, SequenceSource, as_source
from llmenv.types import Task

TASKS = [Task(f"what is {i} + {i}?", answer=str(2 * i)) for i in range(10)]
ROWS = [{"question": f"what is {i} + 1?", "answer": str(i + 1)} for i in range(10)]


def row_to_task(row):
    return Task(row["question"], answer=row["answer"])


def generate_sum(rng: np.random.Generator, *, high: int = 10) -> Task:
    a, b = (int(x) for x in rng.integers(0, high, size=2))
    return Task(f"{a} + {b} = ?", answer=str(a + b), meta={"high": high})


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def draws(source, seed: int, n: int = 20) -> list[Task]:
    rng = np.random.default_rng(seed)
    return [source.sample(rng) for _ in range(n)]


def sources_of_every_kind(tmp_path: Path) -> dict[str, sources.TaskSource]:
    return {
        "list": SequenceSource(TASKS),
        "procedural": ProceduralSource(generate_sum, {"high": 1000}),
        "dataset": DatasetSource(datasets.Dataset.from_list(ROWS), row_to_task),
        "hub files": HubDataset("org/sums", row_to_task).load(data_files=write_jsonl(tmp_path / "s.jsonl", ROWS)),
    }


# --- what every source promises ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "procedural", "dataset", "hub files"])
def test_sampling_is_deterministic_given_the_seed(kind, tmp_path):
    source = sources_of_every_kind(tmp_path)[kind]
    assert draws(source, seed=3) == draws(source, seed=3)
    assert draws(source, seed=3) != draws(source, seed=4)
    assert all(isinstance(task, Task) for task in draws(source, seed=5))


@pytest.mark.parametrize("kind", ["list", "procedural", "dataset", "hub files"])
def test_get_serves_the_same_task_for_the_same_index(kind, tmp_path):
    source = sources_of_every_kind(tmp_path)[kind]
    assert source.get(2) == source.get(2)
    assert source.get(2) != source.get(3)


def test_sampling_reaches_every_task_of_a_finite_source():
    rng = np.random.default_rng(0)
    seen = {SequenceSource(TASKS).sample(rng).prompt for _ in range(200)}
    assert seen == {task.prompt for task in TASKS}


# --- fixed lists ---------------------------------------------------------------------------------


def test_list_source_serves_its_tasks_by_index():
    source = SequenceSource(TASKS)
    assert len(source) == 10 and source.get(0) is TASKS[0] and source.get(9) is TASKS[9]
    with pytest.raises(IndexError):
        source.get(10)


def test_an_empty_list_is_refused():
    with pytest.raises(TaskConfigError, match="at least one Task"):
        SequenceSource([])
    with pytest.raises(TaskConfigError, match="at least one Task"):
        as_source([])


def test_a_list_item_that_is_not_a_task_is_named():
    with pytest.raises(TaskConfigError, match="item 1 is str"):
        SequenceSource([Task("q"), "what is 2 + 2?"])


def test_one_task_is_a_source_of_one():
    task = Task("only")
    source = as_source(task)
    assert draws(source, seed=0, n=5) == [task] * 5 and source.get(0) is task


# --- generators ----------------------------------------------------------------------------------


def test_procedural_source_passes_its_parameters():
    source = as_source(generate_sum, {"high": 3})
    assert isinstance(source, ProceduralSource)
    assert all(task.meta["high"] == 3 and int(task.answer) <= 4 for task in draws(source, seed=0))


def test_procedural_get_is_the_generator_seeded_by_the_index():
    source = ProceduralSource(generate_sum, {"high": 1000})
    assert source.get(7) == generate_sum(np.random.default_rng(7), high=1000)


def test_an_unknown_generator_parameter_fails_at_construction_naming_it():
    with pytest.raises(TaskConfigError, match="generate_sum rejected parameters {'hihg': 3}.*hihg"):
        as_source(generate_sum, {"hihg": 3})


def test_a_generator_that_does_not_return_a_task_is_refused():
    with pytest.raises(TaskConfigError, match="must return llmenv.Task, got dict"):
        ProceduralSource(lambda rng: {"prompt": "q"})


# --- datasets and sized tables -------------------------------------------------------------------


def test_dataset_rows_become_tasks():
    source = as_source(datasets.Dataset.from_list(ROWS), row_to_task=row_to_task)
    assert isinstance(source, DatasetSource) and len(source) == 10
    assert source.get(4) == Task("what is 4 + 1?", answer="5")
    with pytest.raises(IndexError):
        source.get(10)


def test_a_plain_list_of_rows_works_as_a_table():
    source = as_source(ROWS, row_to_task=row_to_task)
    assert len(source) == 10 and source.get(0) == Task("what is 0 + 1?", answer="1")


def test_a_bad_row_names_its_index_and_the_row_keys():
    source = DatasetSource([*ROWS[:2], {"prompt": "no question column"}], row_to_task)
    assert source.get(1).answer == "2"
    with pytest.raises(
        TaskConfigError,
        match=r"row 2 could not be turned into a Task \(KeyError\('question'\)\); row keys: \['prompt'\]",
    ):
        source.get(2)
    # a Dataset fills a missing value with None: Task's own check names it
    source = DatasetSource(datasets.Dataset.from_list([*ROWS[:2], {"question": None, "answer": "3"}]), row_to_task)
    with pytest.raises(TaskConfigError, match="row 2 could not be turned into a Task .*Task.prompt must be a string"):
        source.get(2)


def test_a_row_converter_that_does_not_return_a_task_is_refused():
    source = DatasetSource(ROWS, lambda row: row["question"])
    with pytest.raises(TaskConfigError, match="row_to_task must return llmenv.Task, got str"):
        source.get(0)


def test_an_empty_dataset_is_refused():
    with pytest.raises(TaskConfigError, match="no rows"):
        DatasetSource(datasets.Dataset.from_list([]), row_to_task)


def test_row_to_task_needs_a_table_and_takes_no_parameters():
    with pytest.raises(TaskConfigError, match="needs a datasets.Dataset.*got function"):
        as_source(generate_sum, row_to_task=row_to_task)
    with pytest.raises(TaskConfigError, match=r"unexpected task parameters \['limit'\] for a dataset source"):
        as_source(ROWS, {"limit": 3}, row_to_task=row_to_task)


# --- HubDataset on local files -------------------------------------------------------------------


def test_hub_dataset_loads_local_jsonl(tmp_path):
    source = HubDataset("org/sums", row_to_task).load(data_files=str(write_jsonl(tmp_path / "sums.jsonl", ROWS)))
    assert len(source) == 10 and source.get(9) == Task("what is 9 + 1?", answer="10")


def test_hub_dataset_loads_several_files_and_csv(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", ROWS[:4])
    second = write_jsonl(tmp_path / "b.jsonl", ROWS[4:])
    source = HubDataset("org/sums", row_to_task).load(data_files=[first, str(second)])
    assert [source.get(i).answer for i in range(10)] == [row["answer"] for row in ROWS]
    csv = tmp_path / "sums.csv"
    csv.write_text("question,answer\n" + "".join(f"{row['question']},{row['answer']}\n" for row in ROWS))
    # CSV reads numbers as numbers; the converter sees the file's own types
    source = HubDataset("org/sums", lambda row: Task(row["question"], answer=str(row["answer"]))).load(data_files=csv)
    assert source.get(3) == Task("what is 3 + 1?", answer="4")


def test_hub_dataset_limit_keeps_the_first_rows(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", ROWS)
    source = HubDataset("org/sums", row_to_task).load(data_files=path, limit=3)
    assert len(source) == 3 and source.get(2).answer == "3"
    assert len(HubDataset("org/sums", row_to_task).load(data_files=path, limit=100)) == 10
    with pytest.raises(TaskConfigError, match="no rows"):
        HubDataset("org/sums", row_to_task).load(data_files=path, limit=0)


def test_hub_dataset_is_a_source_through_make_parameters(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", ROWS)
    source = as_source(HubDataset("org/sums", row_to_task), {"data_files": str(path), "limit": 2})
    assert isinstance(source, DatasetSource) and len(source) == 2


def test_missing_or_unsupported_data_files_are_reported(tmp_path):
    hub = HubDataset("org/sums", row_to_task)
    with pytest.raises(DatasetUnavailableError, match="data_files not found: .*nope.jsonl"):
        hub.load(data_files=tmp_path / "nope.jsonl")
    text = tmp_path / "rows.txt"
    text.write_text("hi")
    with pytest.raises(DatasetUnavailableError, match=r"got extensions \['.txt'\]"):
        hub.load(data_files=text)
    mixed = [write_jsonl(tmp_path / "a.jsonl", ROWS), tmp_path / "b.csv"]
    mixed[1].write_text("question,answer\nq,1\n")
    with pytest.raises(DatasetUnavailableError, match=r"got extensions \['.csv', '.jsonl'\]"):
        hub.load(data_files=mixed)


def test_an_empty_data_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DatasetUnavailableError, match="are empty"):
        HubDataset("org/sums", row_to_task).load(data_files=empty)


def test_an_unknown_hub_dataset_parameter_is_a_task_config_error(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", ROWS)
    with pytest.raises(TaskConfigError, match="digits"):
        as_source(HubDataset("org/sums", row_to_task), {"data_files": str(path), "digits": 3})


# --- HubDataset and the Hub ----------------------------------------------------------------------


def test_unreachable_hub_fails_at_once_saying_how_to_use_local_files(monkeypatch):
    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("asked datasets to reach the Hub"))
    with pytest.raises(DatasetUnavailableError, match=r"`openai/gsm8k`.*unreachable.*data_files='path/to/gsm8k.jsonl'"):
        HubDataset("openai/gsm8k", row_to_task).load()


def test_reachable_hub_is_asked_for_the_dataset_name_split_and_options(monkeypatch):
    calls = []

    def load_dataset(path, name, *, split, **kwargs):
        calls.append((path, name, split, kwargs))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(sources, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    hub = HubDataset("org/sums", row_to_task, name="main", split="test", load_kwargs={"revision": "v1"})
    assert len(hub.load()) == 10 and len(hub.load(split="train", limit=4)) == 4
    assert calls == [
        ("org/sums", "main", "test", {"revision": "v1"}),
        ("org/sums", "main", "train", {"revision": "v1"}),
    ]


def test_a_hub_failure_is_a_dataset_unavailable_error(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(sources, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DatasetUnavailableError, match="could not load `org/sums` from the Hub: connection reset"):
        HubDataset("org/sums", row_to_task).load()


# --- as_source: what register_task accepts --------------------------------------------------------


def test_a_ready_made_source_is_used_as_is_and_takes_no_parameters():
    ready = SequenceSource(TASKS)
    assert as_source(ready) is ready
    with pytest.raises(TaskConfigError, match=r"unexpected task parameters \['digits'\] for a ready-made source"):
        as_source(ready, {"digits": 3})


def test_a_fixed_list_takes_no_parameters():
    with pytest.raises(TaskConfigError, match=r"unexpected task parameters \['digits'\] for a fixed list of tasks"):
        as_source(TASKS, {"digits": 3})


@pytest.mark.parametrize("bad", ["what is 2 + 2?", 42, None])
def test_anything_else_is_refused_saying_what_is_accepted(bad):
    with pytest.raises(TaskConfigError, match=f"source must be a sequence of Task.*got {type(bad).__name__}"):
        as_source(bad)
