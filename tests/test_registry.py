"""The registry: built-in ids, Gymnasium registration, parameters, plugins and did-you-mean errors."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv import registry
from llmenv.errors import RegistrationError, TaskConfigError, UnknownTaskError
from llmenv.types import Task

BUILTIN = ["llmenv/arith-v0", "llmenv/countdown-v0", "llmenv/gsm8k-v0", "llmenv/math-v0"]


def test_builtins_are_listed_and_registered_with_gymnasium():
    assert set(BUILTIN) <= set(llmenv.list_tasks())
    assert all(task_id in gym.registry for task_id in BUILTIN)


@pytest.mark.parametrize("task_id", ["llmenv/arith-v0", "llmenv/countdown-v0"])
def test_procedural_builtins_pass_check_env(task_id, tok):
    check_env(llmenv.make(task_id, tokenizer=tok), skip_render_check=True)


def test_unknown_task_suggests_close_ids(tok):
    with pytest.raises(UnknownTaskError, match="Did you mean: `llmenv/arith-v0`") as err:
        llmenv.make("llmenv/arith-v1", tokenizer=tok)
    assert "llmenv/arith-v0" in err.value.suggestions
    with pytest.raises(UnknownTaskError, match="Task `llmenv/zzz-v0` doesn't exist"):
        llmenv.make("zzz-v0", tokenizer=tok)


def test_register_a_task_in_a_few_lines(tok):
    task_id = llmenv.register_task(
        "echo-v0", source=[Task("Say hi", answer="hi")], verifier=lambda c, t: c == t.answer, replace=True
    )
    assert task_id == "llmenv/echo-v0" and task_id in llmenv.list_tasks()
    env = gym.make(task_id, tokenizer=tok)
    env.reset(seed=0)
    assert env.step("hi")[1] == 1.0


def test_procedural_parameters_pass_through_make_and_are_validated_early(tok):
    env = llmenv.make("llmenv/arith-v0", tokenizer=tok, digits=1, ops="+", terms=3)
    _, info = env.reset(seed=0)
    assert info["task"].meta["terms"] == 3 and "*" not in info["task"].meta["expression"]
    with pytest.raises(TaskConfigError, match="digitz"):
        llmenv.make("llmenv/arith-v0", tokenizer=tok, digitz=3)
    with pytest.raises(TaskConfigError, match="digits must be in 1..9"):
        llmenv.make("llmenv/arith-v0", tokenizer=tok, digits=0)


def test_make_can_replace_the_verifier_and_set_env_options(tok):
    env = llmenv.make("llmenv/arith-v0", tokenizer=tok, verifier=lambda c, t: 0.5, system_prompt="Be terse.")
    _, info = env.reset(seed=0)
    assert info["messages"][0] == {"role": "system", "content": "Be terse."}
    assert env.step([1])[1] == 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task_id": "no version"}, "must look like"),
        ({"verifier": "not callable"}, "must be callable"),
        ({"env": "quantum"}, "unknown env kind 'quantum'"),
        ({"source": 12}, "source of `llmenv/bad-v0` must be"),
    ],
)
def test_bad_registrations_fail_loudly(kwargs, message):
    args = {"task_id": "bad-v0", "source": [Task("q")], "verifier": lambda c, t: 0.0, **kwargs}
    with pytest.raises(RegistrationError, match=message):
        llmenv.register_task(args.pop("task_id"), **args)


def test_duplicate_registration_needs_replace():
    llmenv.register_task("dup-v0", source=[Task("q")], verifier=lambda c, t: 0.0, replace=True)
    with pytest.raises(RegistrationError, match="already registered; pass replace=True"):
        llmenv.register_task("dup-v0", source=[Task("q")], verifier=lambda c, t: 0.0)


def test_dataset_source_with_row_to_task(tok):
    import datasets

    data = datasets.Dataset.from_list([{"q": "1+1", "a": "2"}, {"q": "2+2", "a": "4"}])
    llmenv.register_task(
        "rows-v0",
        source=data,
        row_to_task=lambda r: Task(r["q"], answer=r["a"]),
        verifier=lambda c, t: c == t.answer,
        replace=True,
    )
    env = llmenv.make("rows-v0", tokenizer=tok)
    _, info = env.reset(options={"index": 1})
    assert info["task"].answer == "4"


class _EntryPoint:
    def __init__(self, name, fn):
        self.name, self.value, self._fn = name, f"fake:{name}", fn

    def load(self):
        return self._fn


def test_plugins_register_through_entry_points_and_broken_ones_warn(monkeypatch):
    def good():
        llmenv.register_task("plugin-good-v0", source=[Task("q")], verifier=lambda c, t: 1.0, replace=True)

    def bad():
        raise ImportError("missing dependency")

    monkeypatch.setattr(registry, "entry_points", lambda group: [_EntryPoint("good", good), _EntryPoint("bad", bad)])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = llmenv.list_tasks()
    assert "llmenv/plugin-good-v0" in ids
    assert any("plugin 'bad'" in str(w.message) and "missing dependency" in str(w.message) for w in caught)
