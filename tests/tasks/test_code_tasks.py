"""humaneval-v0, mbpp-v0 and codegen-v0: loading, prompts, reference solutions through CodeVerifier, check_env."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import llmenv
from llmenv.errors import TaskConfigError
from llmenv.tasks.code import HUMANEVAL, mbpp_entry_point, mbpp_row_to_task, read_humaneval
from llmenv.tasks.codegen import TEMPLATES, generate_codegen
from llmenv.verifiers.code import CodeVerifier

MBPP_ROWS = [
    {
        "task_id": 2,
        "prompt": "Write a function to find the shared elements from the given two lists.",
        "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
        "test_imports": [],
        "test_list": [
            "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
            "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
        ],
    },
    {
        "task_id": 3,
        "prompt": "Write a python function to identify non-prime numbers.",
        "code": "import math\ndef is_not_prime(n):\n    if n < 2:\n        return True\n"
        "    return any(n % i == 0 for i in range(2, int(math.sqrt(n)) + 1))",
        "test_imports": ["import math"],
        "test_list": [
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
            "assert math.isclose(float(is_not_prime(35)), 1.0)",
        ],
    },
]


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    return CodeVerifier(per_test_timeout_s=3.0)


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


# ---------------------------------------------------------------- HumanEval


def test_humaneval_has_164_problems_with_prompt_tests_and_entry_point():
    raw = read_humaneval()
    assert len(raw) == 164 and len(HUMANEVAL) == 164
    task = HUMANEVAL.get(0)
    assert raw[0]["prompt"].strip() in task.prompt and "```python" in task.prompt
    assert task.meta["entry_point"] == "has_close_elements" and "def check(candidate)" in task.tests
    assert task.meta["code_prefix"] == raw[0]["prompt"] == task.meta["test_prelude"]


@pytest.mark.parametrize("index", [0, 2, 32, 38, 53, 163])
def test_humaneval_canonical_solutions_pass_as_full_code_and_as_body(verifier, index):
    task = HUMANEVAL.get(index)
    full = verifier(fenced(task.meta["code_prefix"] + task.meta["canonical_solution"]), task)
    body = verifier(fenced(task.meta["canonical_solution"]), task)
    assert full.reward == 1.0 and full.passed, full.details["tests"]
    assert body.reward == 1.0 and body.passed, body.details["tests"]
    assert verifier(fenced("pass"), task).reward < 1.0


@pytest.mark.slow
def test_all_164_humaneval_canonical_solutions_pass():
    tasks = [HUMANEVAL.get(i) for i in range(164)]
    completions = [fenced(t.meta["code_prefix"] + t.meta["canonical_solution"]) for t in tasks]
    verdicts = CodeVerifier().verify_batch(completions, tasks)
    assert [t.meta["task_id"] for t, v in zip(tasks, verdicts) if not v.passed] == []


def test_humaneval_env_steps_and_passes_check_env(tok):
    env = llmenv.make("llmenv/humaneval-v0", tokenizer=tok)
    _, info = env.reset(seed=3)
    task = info["task"]
    _, reward, terminated, _, step_info = env.step(fenced(task.meta["code_prefix"] + task.meta["canonical_solution"]))
    assert reward == 1.0 and terminated and step_info["verdict"].passed
    check_env(env, skip_render_check=True)


# ---------------------------------------------------------------- MBPP


def test_mbpp_rows_become_assert_tasks():
    task = mbpp_row_to_task(MBPP_ROWS[1])
    assert task.meta["entry_point"] == "is_not_prime" and task.meta["test_prelude"] == "import math"
    assert "`is_not_prime`" in task.prompt and MBPP_ROWS[1]["test_list"][0] in task.prompt
    full = mbpp_row_to_task(
        {
            "task_id": 9,
            "text": "Add.",
            "code": "def helper():\n    pass\ndef add(a, b):\n    return a + b",
            "test_list": ["assert add(1, 2) == 3"],
            "test_setup_code": "x = 1",
        }
    )
    assert full.meta["entry_point"] == "add" and full.meta["test_prelude"] == "x = 1"
    with pytest.raises(ValueError, match="called by the tests"):
        mbpp_entry_point("def f():\n    pass", ["assert g() == 1"])


def test_mbpp_env_from_local_jsonl(tmp_path, tok, verifier):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MBPP_ROWS))
    env = llmenv.make("llmenv/mbpp-v0", tokenizer=tok, data_files=str(path))
    for index, row in enumerate(MBPP_ROWS):
        _, info = env.reset(options={"index": index})
        assert env.step(fenced(row["code"]))[1] == 1.0
    _, info = env.reset(options={"index": 1})
    assert env.step(fenced("def is_not_prime(n):\n    return n == 10"))[1] == pytest.approx(2 / 3)
    check_env(env, skip_render_check=True)


# ---------------------------------------------------------------- codegen


def test_codegen_is_deterministic_per_seed_and_varied():
    first, again = generate_codegen(np.random.default_rng(7)), generate_codegen(np.random.default_rng(7))
    assert first == again
    templates = {generate_codegen(np.random.default_rng(s)).meta["template"] for s in range(60)}
    assert len(templates) >= 8
    task = generate_codegen(np.random.default_rng(1), n_tests=5)
    assert len(task.tests) == 5 and f"`{task.meta['entry_point']}(" in task.prompt
    with pytest.raises(TaskConfigError):
        generate_codegen(np.random.default_rng(0), templates=("nope",))
    with pytest.raises(TaskConfigError):
        generate_codegen(np.random.default_rng(0), n_tests=0)


def test_codegen_reference_solutions_pass_and_wrong_ones_fail(verifier):
    tasks = [
        generate_codegen(np.random.default_rng(seed), templates=(t.reference.__name__,))
        for seed, t in enumerate(TEMPLATES)
    ]
    good = verifier.verify_batch([fenced(t.meta["reference_solution"]) for t in tasks], tasks)
    assert [v.reward for v in good] == [1.0] * len(tasks), [v.details["tests"] for v in good if v.reward < 1]
    wrong = [fenced(f"def {t.meta['entry_point']}(*args):\n    return 'wrong'") for t in tasks]
    assert all(v.reward == 0.0 for v in verifier.verify_batch(wrong, tasks))


def test_codegen_env_passes_check_env(tok):
    env = llmenv.make("llmenv/codegen-v0", tokenizer=tok, n_tests=4)
    _, info = env.reset(seed=11)
    assert env.step(fenced(info["task"].meta["reference_solution"]))[1] == 1.0
    check_env(env, skip_render_check=True)
