"""Tests of llmenv.verifiers.code: extraction, the three test forms, time bounds, and every known reward hack."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmenv.errors import VerifierError
from llmenv.sandboxes.base import ExecResult, Limits, SandboxError
from llmenv.types import Task, Verdict
from llmenv.verifiers.base import call_verifier, check_verifier
from llmenv.verifiers.code import CodeVerifier, extract_code, kind_of_tests, normalize_output

CHECK_TESTS = """
METADATA = {}

def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-1, 1) == 0
    assert True, "constant asserts are not tests"
    total = candidate(10, 5)
    assert total == 15
"""
ADD = Task("Write add(a, b).", tests=CHECK_TESTS, meta={"entry_point": "add"})
ADD_ASSERTS = Task(
    "Write add(a, b).",
    tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4", "assert add(0, 0) == 0"],
)
ECHO_SUM = Task(
    "Read two ints, print their sum.",
    tests=[
        {"input": "1 2\n", "output": "3\n"},
        {"input": "10 20\n", "output": "30"},
        {"input": "-5 5\n", "output": "0  \n\n"},
    ],
)

GOOD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    return CodeVerifier(limits=Limits(wall_time_s=10.0, memory_mb=512), per_test_timeout_s=1.0)


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution.\n```{tag}\n{code.rstrip()}\n```\nDone."


# ---------------------------------------------------------------- extraction and test forms


def test_extract_code_prefers_the_last_python_block():
    text = "```python\nfirst\n```\ntext\n```\nplain\n```\n```py\nsecond\n```\n```bash\nls\n```"
    assert extract_code(text) == "second"
    assert extract_code("```\none\n```\n```text\ntwo\n```") == "two"
    assert extract_code("no fences at all") == "no fences at all"
    assert extract_code("cut off:\n```python\ndef f():\n    return 1") == "def f():\n    return 1"
    assert extract_code("1. step\n   ```python\n   x = 1\n       y = 2\n   ```") == "x = 1\n    y = 2"
    assert extract_code("```python\n    return x\n```") == "    return x"  # a body keeps its indentation


def test_normalize_output_strips_trailing_spaces_and_newlines():
    assert normalize_output("1 \n2\t\r\n\n\n") == "1\n2"
    assert normalize_output("  a") == "  a"


def test_test_type_is_inferred_and_checked():
    assert kind_of_tests(ADD) == "check"
    assert kind_of_tests(ADD_ASSERTS) == "asserts"
    assert kind_of_tests(ECHO_SUM) == "stdio"
    with pytest.raises(VerifierError, match="entry_point"):
        kind_of_tests(Task("q", tests=CHECK_TESTS))
    with pytest.raises(VerifierError, match="must be a str"):
        kind_of_tests(Task("q", tests=[1, 2]))
    with pytest.raises(VerifierError, match="looks like 'asserts'"):
        kind_of_tests(Task("q", tests=["assert 1"], meta={"test_type": "stdio"}))


# ---------------------------------------------------------------- HumanEval-style check(candidate)


def test_check_pass_partial_fail(verifier):
    passed = verifier(fenced(GOOD), ADD)
    assert passed.reward == 1.0 and passed.passed and passed.error is None
    assert dict(passed.parts) == {"tests": 1.0}
    assert passed.details["total"] == 3 and passed.details["test_type"] == "check"

    partial = verifier(fenced("def add(a, b):\n    return 3\n"), ADD)
    assert partial.reward == pytest.approx(1 / 3) and partial.passed is False
    reasons = [t["reason"] for t in partial.details["tests"] if not t["passed"]]
    assert "returned 3" in reasons[0]

    failed = verifier(fenced("def add(a, b):\n    raise ValueError('nope')\n"), ADD)
    assert failed.reward == 0.0 and "ValueError: nope" in failed.details["tests"][0]["reason"]


def test_check_syntax_error_and_missing_function(verifier):
    broken = verifier(fenced("def add(a, b)\n    return a + b\n"), ADD)
    assert broken.reward == 0.0 and broken.error is None
    assert "SyntaxError" in broken.details["tests"][0]["reason"]
    missing = verifier(fenced("def plus(a, b):\n    return a + b\n"), ADD)
    assert missing.reward == 0.0 and "does not define" in missing.details["tests"][0]["reason"]


def test_a_test_that_hangs_fails_alone_and_the_candidate_restarts(verifier):
    code = "def add(a, b):\n    while a == 10:\n        pass\n    return a + b\n"
    verdict = verifier(fenced(code), ADD)
    assert verdict.reward == pytest.approx(2 / 3) and verdict.error is None
    assert [t["passed"] for t in verdict.details["tests"]] == [True, True, False]
    assert "setup statement" in verdict.details["tests"][2]["reason"]
    assert "timed out after 1s" in verdict.details["tests"][2]["reason"]


def test_infinite_loop_at_import_fails_every_test(verifier):
    verdict = verifier(fenced("while True:\n    pass\n" + GOOD), ADD)
    assert verdict.reward == 0.0 and verdict.error is None
    reasons = {t["reason"] for t in verdict.details["tests"]}
    assert reasons == {"timed out after 1s while loading the code"}
    assert verdict.details["timed_out"] is False  # cut by the 1 s per-test bound, not the run's 10 s bound


def test_whole_run_timeout_keeps_the_tests_passed_before_it():
    verifier = CodeVerifier(limits=Limits(wall_time_s=2.0), per_test_timeout_s=1.5)
    code = "import time\ndef add(a, b):\n    time.sleep(0.7)\n    return a + b\n"
    verdict = verifier(fenced(code), ADD_ASSERTS)
    assert verdict.error is None and verdict.details["timed_out"] is True
    assert 0 < verdict.reward < 1
    assert "whole run" in verdict.details["tests"][-1]["reason"]


def test_humaneval_body_only_completion_runs_after_the_prompt(verifier):
    prompt = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
    task = Task(prompt, tests=CHECK_TESTS, meta={"entry_point": "add", "code_prefix": prompt})
    assert verifier("```python\n    return a + b\n```", task).reward == 1.0
    assert verifier(fenced("from __future__ import annotations\n" + GOOD), task).reward == 1.0


ROUND_TRIP_TESTS = """
def check(candidate):
    for word in ["abc", "hello world", ""]:
        assert candidate(encode(word)) == word
    assert candidate(encode("xyz")) == "xyz"
"""
ROUND_TRIP = Task("Write decode(s), the inverse of encode(s).", tests=ROUND_TRIP_TESTS, meta={"entry_point": "decode"})
CODEC = "def encode(s):\n    return s[::-1] + '!'\n\ndef decode(s):\n    return s[:-1][::-1]\n"


def test_check_calls_the_helpers_the_candidate_defines(verifier):
    verdict = verifier(fenced(CODEC), ROUND_TRIP)
    assert verdict.reward == 1.0, verdict.details["tests"]
    assert verifier.verify_batch([fenced(CODEC)] * 2, [ROUND_TRIP] * 2)[1].reward == 1.0
    wrong = verifier(fenced(CODEC.replace("[:-1][::-1]", "[:-1]")), ROUND_TRIP)
    assert wrong.reward == 0.0 and "decode(...) returned 'cba'" in wrong.details["tests"][0]["reason"]


def test_a_helper_is_held_to_the_exact_builtin_rule(verifier):
    code = (
        "class Anything(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
        "def encode(s):\n    return Anything(s)\n\ndef decode(s):\n    return s\n"
    )
    verdict = verifier(fenced(code), ROUND_TRIP)
    assert verdict.reward == 0.0 and verdict.error is None
    assert all("encode returned an unsupported value" in t["reason"] for t in verdict.details["tests"])


def test_a_helper_the_candidate_does_not_define_fails_clearly(verifier):
    verdict = verifier(fenced("def decode(s):\n    return s\n"), ROUND_TRIP)
    assert verdict.reward == 0.0 and verdict.error is None
    reason = verdict.details["tests"][0]["reason"]
    assert "NameError: name 'encode' is not defined" in reason and "candidate's code" in reason
    raised = verifier(fenced(CODEC.replace("return s[:-1][::-1]", "return undefined_name")), ROUND_TRIP)
    assert "NameError" in raised.details["tests"][0]["reason"]
    assert "candidate's code" not in raised.details["tests"][0]["reason"]  # its own NameError, reported as such


def test_the_tests_own_names_and_builtins_win_over_the_candidates(verifier):
    tests = "def encode(s):\n    return s + '?'\n\ndef check(candidate):\n    assert candidate(encode('a')) == 'a'\n"
    task = Task("q", tests=tests, meta={"entry_point": "decode"})
    code = "def encode(s):\n    return 'wrong'\n\ndef decode(s):\n    return s[:-1]\n\ndef len(x):\n    return 0\n"
    assert verifier(fenced(code), task).reward == 1.0


# ---------------------------------------------------------------- MBPP-style asserts


def test_asserts_pass_partial_fail_and_syntax_error(verifier):
    assert verifier(fenced(GOOD), ADD_ASSERTS).reward == 1.0
    partial = verifier(fenced("def add(a, b):\n    return 4 if a == 2 else 0\n"), ADD_ASSERTS)
    assert partial.reward == 0.75 and [t["passed"] for t in partial.details["tests"]] == [False, True, True, True]
    assert verifier(fenced("def add(a, b):\n    return None\n"), ADD_ASSERTS).reward == 0.0
    assert verifier(fenced("def add(a, b):\n  return a +\n"), ADD_ASSERTS).reward == 0.0


def test_asserts_see_test_imports_and_builtins_are_never_shadowed(verifier):
    tests = ["assert math.isclose(area(2.0), 12.566, rel_tol=1e-3)", "assert sorted(area(1.0, True)) == [1, 2]"]
    task = Task("q", tests=tests, meta={"test_prelude": "import math"})
    code = "import math\ndef area(r, pair=False):\n    return [2, 1] if pair else math.pi * r * r\n"
    assert verifier(fenced(code), task).reward == 1.0
    hijack = code + "def sorted(x):\n    return [1, 2]\n"  # the tests' `sorted` stays the builtin
    assert verifier(fenced(hijack.replace("[2, 1]", "[3, 3]")), task).reward == 0.5


# ---------------------------------------------------------------- stdin/stdout cases


def test_stdio_pass_partial_errors(verifier):
    good = "a, b = map(int, input().split())\nprint(a + b)\n"
    assert verifier(fenced(good), ECHO_SUM).reward == 1.0
    wrong = verifier(fenced("a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)\n"), ECHO_SUM)
    assert wrong.reward == pytest.approx(2 / 3) and "wrong answer" in wrong.details["tests"][2]["reason"]
    crash = verifier(fenced("raise SystemExit(3)"), ECHO_SUM)
    assert crash.reward == 0.0 and "exit code 3" in crash.details["tests"][0]["reason"]
    syntax = verifier(fenced("print(("), ECHO_SUM)
    assert syntax.reward == 0.0 and all("SyntaxError" in t["reason"] for t in syntax.details["tests"])


def test_stdio_timeout_is_per_case(verifier):
    code = "a, b = map(int, input().split())\nwhile a == 10:\n    pass\nprint(a + b)\n"
    verdict = verifier(fenced(code), ECHO_SUM)
    assert verdict.reward == pytest.approx(2 / 3) and "timed out" in verdict.details["tests"][1]["reason"]


# ---------------------------------------------------------------- reward hacks: each must fail

HACKS = {
    "eq_override": (
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Anything()\n"
    ),
    "os_exit_at_import": "import os\nos._exit(0)\ndef add(a, b):\n    return -999\n",
    "sys_exit_at_import": "import sys\nsys.exit(0)\ndef add(a, b):\n    return -999\n",
    "os_exit_in_function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "monkeypatched_builtins": (
        "import builtins, sys\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
        "builtins.isinstance = lambda *a: True\nbuiltins.print = lambda *a, **k: None\n"
        "sys.exit = lambda *a: None\nbuiltins.len = lambda *a: 0\nbuiltins.sorted = lambda *a, **k: []\n"
        "def add(a, b):\n    return -999\n"
    ),
    "fake_results": (
        "import os, sys\n"
        "for tag in ('plan 4', 'result 0 1', 'result 1 1', 'result 2 1', 'result 3 1', 'done'):\n"
        "    print(tag); print('x', tag); sys.stderr.write(tag + '\\n')\n"
        "for pid in (os.getppid(), int(open(f'/proc/{os.getppid()}/stat').read().split(')')[1].split()[1])):\n"
        "    try:\n"
        "        with open(f'/proc/{pid}/fd/1', 'w') as out:\n"
        "            out.write('result 0 1\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "def add(a, b):\n    return -999\n"
    ),
    "kill_harness": (
        "import os, signal\n"
        "spawner = os.getppid()\n"
        "harness = int(open(f'/proc/{spawner}/stat').read().split(')')[1].split()[1])\n"
        "print('all tests passed')\n"
        "os.kill(harness, signal.SIGKILL)\nos.kill(spawner, signal.SIGKILL)\n"
        "def add(a, b):\n    return -999\n"
    ),
    "kill_process_group": "import os, signal\nos.killpg(0, signal.SIGKILL)\ndef add(a, b):\n    return -999\n",
    "int_subclass": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\ndef add(a, b):\n    return Int(0)\n"
    ),
    "str_subclass": (
        "class Str(str):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = str.__hash__\ndef add(a, b):\n    return Str('no')\n"
    ),
    "bool_like_result": (
        "class Truthy(int):\n    def __bool__(self):\n        return True\n"
        "    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\ndef add(a, b):\n    return Truthy(1)\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HACKS))
@pytest.mark.parametrize("task", [ADD, ADD_ASSERTS], ids=["check", "asserts"])
def test_reward_hacks_fail(verifier, name, task):
    verdict = verifier(fenced(HACKS[name]), task)
    assert verdict.passed is False and verdict.reward == 0.0, (name, verdict.details["tests"])
    assert verdict.error is None, verdict.error  # a hack is a failed run, not a verifier failure


def test_candidate_cannot_read_the_tests_or_the_nonce(verifier):
    code = (
        "import gc, os\n"
        "seen = ' '.join(repr(o) for o in gc.get_objects() if isinstance(o, (str, bytes)))\n"
        "leak = 'candidate(10, 5)' in seen or os.path.exists('/proc/self/fd/0') and bool(open(0, 'rb').read())\n"
        "def add(a, b):\n    return a + b + (100 if leak else 0)\n"
    )
    assert verifier(fenced(code), ADD).reward == 1.0


# ---------------------------------------------------------------- contract, errors, batches


def test_check_verifier_contract(verifier):
    check_verifier(
        verifier,
        [
            (fenced(GOOD), ADD, 1.0),
            (fenced("def add(a, b):\n    return 3\n"), ADD, 1 / 3),
            (fenced(GOOD), ADD_ASSERTS, 1.0),
            ("print(1)", ECHO_SUM, 0.0),
        ],
        timeout_s=10.0,
    )


class _BrokenSandbox:
    def run(self, files_or_code, *, cmd=None, stdin="", limits=None):
        raise SandboxError("no namespaces here")

    def close(self):
        pass


class _SilentSandbox(_BrokenSandbox):
    def run(self, files_or_code, *, cmd=None, stdin="", limits=None):
        return ExecResult("", "ImportError: boom", 1, False, False, 0.01)


def test_a_sandbox_that_cannot_run_is_a_verdict_error():
    for sandbox, message in ((_BrokenSandbox(), "no namespaces"), (_SilentSandbox(), "did not start")):
        verdict = CodeVerifier(sandbox)(fenced(GOOD), ADD)
        assert verdict.error is not None and message in verdict.error and verdict.reward == 0.0
    assert CodeVerifier(_BrokenSandbox())(fenced(GOOD), ECHO_SUM).error is not None


def test_verify_batch_keeps_order_and_bad_tasks_become_errors(verifier):
    bad_task = Task("q", tests=[1])
    completions = [fenced(GOOD), fenced("def add(a, b):\n    return 3\n"), "print(3)", fenced(GOOD), "x"]
    tasks = [ADD, ADD, ECHO_SUM, ADD_ASSERTS, bad_task]
    verdicts = verifier.verify_batch(completions, tasks, max_workers=3)
    assert [v.reward for v in verdicts[:4]] == [1.0, pytest.approx(1 / 3), pytest.approx(1 / 3), 1.0]
    assert verdicts[4].error is not None and "task.tests" in verdicts[4].error
    assert all(isinstance(v, Verdict) for v in verdicts)
    with pytest.raises(ValueError, match="one task each"):
        verifier.verify_batch(["a"], [])


def test_call_verifier_uses_its_own_time_bound(verifier):
    assert CodeVerifier.time_bounded is True
    assert call_verifier(verifier, fenced(GOOD), ADD).reward == 1.0
    with pytest.raises(VerifierError, match="per_test_timeout_s"):
        CodeVerifier(limits=Limits(wall_time_s=1.0), per_test_timeout_s=2.0)


def test_shared_runs_give_the_same_verdicts_and_a_killer_cannot_sink_its_neighbours():
    shared = CodeVerifier(limits=Limits(wall_time_s=10.0), per_test_timeout_s=1.0, programs_per_run=3)
    completions = [
        fenced(GOOD),
        fenced(HACKS["kill_harness"]),
        fenced(GOOD),
        fenced(HACKS["os_exit_in_function"]),
        fenced("import os\nopen('/tmp/left', 'w').write('x')\nos.fork() or __import__('time').sleep(60)\n" + GOOD),
        fenced(GOOD),
        "print(3)",
    ]
    tasks = [ADD, ADD_ASSERTS, ADD_ASSERTS, ADD, ADD, ADD, ECHO_SUM]
    verdicts = shared.verify_batch(completions, tasks)
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, pytest.approx(1 / 3)]
    assert all(v.error is None for v in verdicts)


def test_verify_batch_shares_runs_evenly_across_workers_by_default(verifier):
    class Counting:
        workers = 2

        def __init__(self, inner):
            self.inner, self.sizes = inner, []

        def run(self, *args, **kwargs):
            result = self.inner.run(*args, **kwargs)
            self.sizes.append(result.stdout.count(" start "))
            return result

    counting = Counting(verifier.sandbox)
    batched = CodeVerifier(counting, limits=verifier.limits, per_test_timeout_s=1.0)
    completions = [fenced(GOOD if i % 3 else "def add(a, b):\n    return a - b\n") for i in range(9)]
    verdicts = batched.verify_batch(completions, [ADD_ASSERTS] * 9)
    assert [v.reward for v in verdicts] == [0.25 if i % 3 == 0 else 1.0 for i in range(9)]
    assert sorted(counting.sizes) == [4, 5]  # two shared runs (one per worker) of even sizes
    one_each = CodeVerifier(counting, limits=verifier.limits, per_test_timeout_s=1.0, programs_per_run=1)
    counting.sizes.clear()
    one_each.verify_batch(completions[:3], [ADD_ASSERTS] * 3)
    assert counting.sizes == [1, 1, 1]


# Finds any string holding the tests' marker in its own process's memory (the marker is split here so
# that the candidate's own source does not contain it).
SNOOP = """import gc
MARK = "SECRET" + "_MARKER_7391"
def _seen():
    for o in gc.get_objects():
        items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()
        try:
            if any(isinstance(v, (str, bytes)) and v is not MARK and MARK in str(v) for v in items):
                return True
        except Exception:
            pass
    return False
def add(a, b):
    return 0 if _seen() else a + b
"""


def test_no_program_of_a_shared_run_holds_any_tests_in_memory():
    marked = Task("Write add(a, b).", tests=["assert add(1, 2) == 3  # SECRET_MARKER_7391", "assert add(2, 2) == 4"])
    shared = CodeVerifier(limits=Limits(wall_time_s=10.0), per_test_timeout_s=2.0, programs_per_run=4)
    verdicts = shared.verify_batch([fenced(SNOOP)] * 4, [marked] * 4, max_workers=1)
    assert [v.reward for v in verdicts] == [1.0] * 4


@pytest.mark.parametrize(
    "tamper",
    [
        "os.kill(os.getppid(), signal.SIGSTOP)",  # stops the process that forks the next candidates
        "os.kill(os.getppid(), signal.SIGKILL)",  # kills it
        "resource.prlimit(os.getppid(), resource.RLIMIT_NPROC, (1, 1))",  # so that it cannot fork them
        "os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",  # so that the next programs run slowly
    ],
)
def test_a_program_that_tampers_with_the_shared_spawner_cannot_fail_the_next_ones(tamper):
    shared = CodeVerifier(limits=Limits(wall_time_s=10.0), per_test_timeout_s=2.0, programs_per_run=3)
    bad = fenced(f"import os, resource, signal\n{tamper}\n" + GOOD)
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # the runs inherit it (0 unless the tests run under `nice`)
    same_niceness = f"os.getpriority(os.PRIO_PROCESS, 0) == {ours}"
    untouched = fenced(f"import os\ndef add(a, b):\n    return a + b if {same_niceness} else 0\n")
    verdicts = shared.verify_batch([bad, untouched, untouched], [ADD_ASSERTS] * 3, max_workers=1)
    assert [v.reward for v in verdicts] == [1.0, 1.0, 1.0] and all(v.error is None for v in verdicts)
    assert not any(v.details["timed_out"] for v in verdicts)  # no program waited out the run's bound


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning applies where the host has two CPUs or more")
def test_each_run_is_pinned_to_one_cpu_and_concurrent_runs_to_different_ones(verifier):
    from llmenv.verifiers.code import _CpuSlots

    slots = _CpuSlots()
    first, second = slots.take(), slots.take()
    assert first != second and {first, second} <= os.sched_getaffinity(0)
    slots.give(first)
    assert slots.take() == first  # the least busy one again
    pinned = fenced("import os\ndef add(a, b):\n    return a + b if len(os.sched_getaffinity(0)) == 1 else 0\n")
    verdicts = verifier.verify_batch([pinned] * 4, [ADD_ASSERTS] * 4)
    assert [v.reward for v in verdicts] == [1.0] * 4 and verifier(pinned, ADD).reward == 1.0


# ---------------------------------------------------------------- single calls on streamed runs


class CountingRuns:
    """A LocalSandbox seen through a counter of its runs and streams (both real)."""

    def __init__(self, inner):
        self.inner, self.runs, self.streams = inner, 0, 0
        self.workers = inner.workers

    @property
    def waiting(self):
        return self.inner.waiting

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.inner.run(*args, **kwargs)

    def stream(self, *args, **kwargs):
        self.streams += 1
        return self.inner.stream(*args, **kwargs)


@pytest.fixture
def counted():
    from llmenv.sandboxes import LocalSandbox

    with LocalSandbox(workers=2) as box:
        yield CountingRuns(box)


def test_single_calls_share_streamed_runs_and_give_the_same_verdicts(verifier, counted):
    streamed = CodeVerifier(counted, limits=verifier.limits, per_test_timeout_s=1.0, programs_per_run=4)
    completions = [fenced(GOOD), fenced("def add(a, b):\n    return a - b\n"), "no code", fenced(GOOD)] * 3
    tasks = [ADD, ADD_ASSERTS, ADD, ADD_ASSERTS] * 3
    got = [streamed(c, t) for c, t in zip(completions, tasks)]
    want = [verifier(c, t) for c, t in zip(completions, tasks)]
    assert [v.details["tests"] for v in got] == [v.details["tests"] for v in want]
    assert [v.reward for v in got] == [v.reward for v in want] == [1.0, 0.25, 0.0, 1.0] * 3
    assert counted.runs == 0 and counted.streams == 3  # 12 calls, 4 per streamed run
    with ThreadPoolExecutor(4) as pool:  # calls from several threads at once
        rewards = list(pool.map(lambda ct: streamed(*ct).reward, zip(completions, tasks)))
    assert rewards == [v.reward for v in want] and counted.runs == 0


def test_an_idle_streamed_run_ends_and_a_killer_cannot_sink_the_next_call(verifier, counted):
    from llmenv.verifiers import code as code_module

    streamed = CodeVerifier(counted, limits=verifier.limits, per_test_timeout_s=1.0)
    assert streamed(fenced(GOOD), ADD).reward == 1.0 and counted.streams == 1
    deadline = time.monotonic() + 10 * code_module.STREAM_IDLE_S + 5
    while streamed._pool._open and time.monotonic() < deadline:
        time.sleep(0.02)
    assert streamed._pool._open == 0  # it held a sandbox worker: it ended by itself
    for hack in ("kill_harness", "kill_process_group", "os_exit_in_function", "fake_results", "eq_override"):
        assert streamed(fenced(HACKS[hack]), ADD).reward == 0.0, hack
        verdict = streamed(fenced(GOOD), ADD)
        assert verdict.reward == 1.0 and verdict.error is None, (hack, verdict.details)


def test_an_idle_streamed_run_gives_way_to_another_caller_at_once(monkeypatch):
    from llmenv.sandboxes import LocalSandbox
    from llmenv.verifiers import code as code_module

    monkeypatch.setattr(code_module, "STREAM_IDLE_S", 600.0)
    with LocalSandbox(workers=1) as box:
        streamed = CodeVerifier(box, per_test_timeout_s=2.0)
        assert streamed(fenced(GOOD), ADD).reward == 1.0 and streamed._pool._open == 1  # holds the only worker
        assert box.run("print(1)", limits=Limits(wall_time_s=5.0)).stdout == "1\n"  # well before 600 s
        assert streamed._pool._open == 0 and streamed(fenced(GOOD), ADD).reward == 1.0
        streamed.close()


def test_no_program_of_a_streamed_run_holds_any_tests_in_memory(counted):
    marked = Task("Write add(a, b).", tests=["assert add(1, 2) == 3  # SECRET_MARKER_7391", "assert add(2, 2) == 4"])
    streamed = CodeVerifier(counted, limits=Limits(wall_time_s=10.0), per_test_timeout_s=2.0, programs_per_run=4)
    verdicts = [streamed(fenced(SNOOP), marked) for _ in range(4)]
    assert [v.reward for v in verdicts] == [1.0] * 4, [v.details for v in verdicts]
    assert counted.streams == 1 and counted.runs == 0, (counted.streams, counted.runs)


@pytest.mark.parametrize("tamper", ["signal.SIGKILL", "signal.SIGSTOP"])
def test_a_tampered_spawner_in_a_streamed_run_cannot_fail_the_next_calls(counted, tamper):
    streamed = CodeVerifier(counted, limits=Limits(wall_time_s=10.0), per_test_timeout_s=2.0)
    bad = fenced(f"import os, signal\nos.kill(os.getppid(), {tamper})\n" + GOOD)
    verdicts = [streamed(c, ADD_ASSERTS) for c in (bad, fenced(GOOD), fenced(GOOD))]
    assert [v.reward for v in verdicts] == [1.0, 1.0, 1.0] and all(v.error is None for v in verdicts)
    assert not any(v.details["timed_out"] for v in verdicts)


def test_candidates_run_without_privileges_in_every_kind_of_run(verifier, counted):
    status = (
        "def status():\n"
        "    fields = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "    return fields['NoNewPrivs'].strip() + ' ' + fields['CapEff'].strip() + ' ' + fields['CapBnd'].strip()\n"
    )
    task = Task("status()", tests=["assert status() == '1 0000000000000000 0000000000000000'"])
    streamed = CodeVerifier(counted, limits=verifier.limits, per_test_timeout_s=1.0)
    shared = CodeVerifier(counted, limits=verifier.limits, per_test_timeout_s=1.0, programs_per_run=2)
    verdicts = [streamed(fenced(status), task), *shared.verify_batch([fenced(status)] * 2, [task] * 2)]
    assert [v.reward for v in verdicts] == [1.0] * 3, [v.details["tests"] for v in verdicts]
    assert counted.streams == 1 and counted.runs == 2  # (a batch takes a shared run per worker)
