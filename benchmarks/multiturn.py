"""Side by side: a two-turn tool episode (llmenv vs verifiers 0.1.14) and a 64-episode batch step (llmenv vs gem).

Run: python benchmarks/multiturn.py [--quick] [--parts tool,vector] [--profile] [--gem-mp]
(in a venv holding llmenv, verifiers==0.1.14 and gem-llm; benchmarks/RESULTS_multiturn.md has the commands).

Part 1, "tool": one episode is a prompt, a tool call, the tool's result and a final answer, with a
trivial tool (`add`) and a trivial verifier (reward 1.0). llmenv: `ToolEnv([Task], verifier, tok,
tools=[add])`, `reset(seed)` + `step(call ids)` + `step(answer ids)`, both actions encoded once
beforehand (EOS included); everything the env does per episode is inside the timing (prompt
rendering and encoding, decoding, parsing the call, running the tool, rendering and encoding the
tool turn, verification, trajectory). verifiers: `vf.ToolEnv(tools=[add], dataset=<1 row>,
rubric=vf.Rubric(funcs=[trivial]))` driven by `vf.OpenAIChatCompletionsClient` over a stub
OpenAI-compatible client whose async `chat.completions.create` returns canned `ChatCompletion`
objects (first a tool call, then the answer; no HTTP, no JSON parsing). It works on messages and
never tokenizes; a third verifiers row adds the token work a token-level trainer (or the inference
server) does for that episode: decoding the two completions and `apply_chat_template(tokenize=True)`
of the two turn prompts.

Part 2, "vector": a batch is `reset` + one `step` of 64 single-turn arithmetic episodes with math
verification, actions a fixed mix of right and wrong answers (plain integers, `\\frac` forms
decided by llmenv's in-process fast path, and sums / square roots that need the sympy slow path).
Rows: llmenv `VectorLLMEnv("llmenv/arith-v0", 64, tok, autoreset=False)`; a loop over 64
`llmenv.make` envs; gem `make_vec` over its `MathEnv` (the `math:` envs, real sympy grading) fed the
same arithmetic tasks as a local `datasets.Dataset` (the hub is unreachable), and over
`rg:basic_arithmetic` (reasoning-gym, string comparison). gem takes text, so each gem row also
appears "+ decode" (the same token ids decoded with the same Rust backend call llmenv uses). Every
batch uses fresh seeds, so no batch repeats an earlier one's (task, answer) pairs verbatim.

Timing as in env_overhead.py: every row calibrated to ~`--target-s` seconds per repetition,
repetitions run round-robin across rows, median (and min) reported.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.metadata
import io
import logging
import os
import platform
import pstats
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

# this folder holds math_verify.py, which would shadow the math_verify package other libraries import
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402

QUESTION = "What is 19 + 23? Use the add tool."
CALL_TEXT = '<tool_call>{"name": "add", "arguments": {"a": 19, "b": 23}}</tool_call>'
ANSWER_TEXT = "19 + 23 = 42. The answer is \\boxed{42}."
BATCH = 64

Runner = Callable[[int], None]  # (units) -> None; a unit is one episode (part 1) or one 64-episode batch (part 2)


@dataclass
class Row:
    part: str
    library: str
    what: str
    per_unit: int  # episodes per unit
    build: Callable[[int], Runner] | None = None  # (units per repetition) -> a runner with its inputs prepared
    runner_for_calibration: Runner | None = None
    units: int = 0
    median_us: float | None = None
    min_us: float | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer.
        b: the second integer.
    """
    return a + b


def trivial(completion, task):  # noqa: ARG001 - llmenv's verifier signature
    return 1.0


def fast_decode(tok) -> Callable[[list[int]], str]:
    backend = getattr(tok, "backend_tokenizer", None) if getattr(tok, "is_fast", False) else None
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tok.decode(ids, skip_special_tokens=True)


def encode_action(tok, text: str) -> np.ndarray:
    return np.asarray(list(tok.encode(text, add_special_tokens=False)) + [int(tok.eos_token_id)], dtype=np.int64)


class Seeds:
    next = 10_000_000

    @classmethod
    def take(cls, n: int) -> int:
        first = cls.next
        cls.next += n
        return first


# -- part 1: tool episode ------------------------------------------------------------------------


def llmenv_tool_env(tok):
    from llmenv.tool_env import ToolEnv  # noqa: PLC0415
    from llmenv.types import Task  # noqa: PLC0415

    return ToolEnv([Task(QUESTION, answer="42")], trivial, tok, tools=[add])


def llmenv_tool_runner(tok) -> Runner:
    env = llmenv_tool_env(tok)
    call_ids, answer_ids = encode_action(tok, CALL_TEXT), encode_action(tok, ANSWER_TEXT)
    # check once that the episode really is call -> tool result -> verified answer
    env.reset(seed=0)
    _, _, term, _, info = env.step(call_ids)
    assert not term and info["tool_calls"] == 1 and not info["tool_errors"], info
    assert info["env_messages"] == [{"role": "tool", "content": "42"}], info["env_messages"]
    _, reward, term, _, info = env.step(answer_ids)
    assert term and reward == 1.0 and info["stop_reason"] == "answered", info
    reset, step = env.reset, env.step

    def run(n: int) -> None:
        first = Seeds.take(n)
        for i in range(first, first + n):
            reset(seed=i)
            step(call_ids)
            step(answer_ids)

    return run


def verifiers_tool_runners(tok) -> dict[str, Runner]:
    import verifiers as vf  # noqa: PLC0415
    from datasets import Dataset  # noqa: PLC0415
    from openai.types.chat import ChatCompletion  # noqa: PLC0415

    def canned(cid: str, finish: str, message: dict, usage: tuple[int, int]) -> ChatCompletion:
        return ChatCompletion.model_validate(
            {
                "id": cid,
                "object": "chat.completion",
                "created": 0,
                "model": "stub",
                "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
            }
        )

    call = canned(
        "c1",
        "tool_calls",
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 19, "b": 23}'}}
            ],
        },
        (200, 33),
    )
    answer = canned("c2", "stop", {"role": "assistant", "content": ANSWER_TEXT}, (240, 21))

    class Completions:
        calls = 0

        async def create(self, *, model, messages, tools=None, **kwargs):  # noqa: ARG002 - OpenAI's signature
            Completions.calls += 1
            last = messages[-1]
            role = last["role"] if isinstance(last, dict) else last.role
            return answer if role == "tool" else call

    class Chat:
        completions = Completions()

    class StubAsyncOpenAI:
        chat = Chat()

    async def reward(completion, answer, **kwargs) -> float:  # noqa: ARG001 - the rubric passes what it names
        return 1.0

    dataset = Dataset.from_list([{"question": QUESTION, "answer": "42"}])
    env = vf.ToolEnv(tools=[add], dataset=dataset, rubric=vf.Rubric(funcs=[reward]), max_turns=6)
    client = vf.OpenAIChatCompletionsClient(StubAsyncOpenAI())
    row = env.get_dataset().to_list()[0]
    loop = asyncio.new_event_loop()

    out = loop.run_until_complete(env.run_rollout(row, client, "stub", {}))
    roles = [m["role"] if isinstance(m, dict) else m.role for m in out["completion"]]
    assert roles == ["assistant", "tool", "assistant"] and out["reward"] == 1.0, (roles, out["reward"])
    assert out["stop_condition"] == "no_tools_called" and out["metrics"]["add_calls"] == 1, out["metrics"]

    # the token work a token-level trainer on top of it needs (same messages llmenv's episode has)
    decode = fast_decode(tok)
    call_list, answer_list = encode_action(tok, CALL_TEXT).tolist(), encode_action(tok, ANSWER_TEXT).tolist()
    ref = llmenv_tool_env(tok)
    _, info = ref.reset(seed=0)
    turn1 = info["messages"]  # system block listing the tool (SmolLM2's template ignores tools=) + user
    turn2 = [*turn1, {"role": "assistant", "content": CALL_TEXT}, {"role": "tool", "content": "42"}]

    def many(fn: Callable[[], object]) -> Runner:
        async def go(n: int) -> None:
            for _ in range(n):
                await fn()

        return lambda n: loop.run_until_complete(go(n))

    async def with_tokens() -> None:
        tok.apply_chat_template(turn1, add_generation_prompt=True, tokenize=True)
        decode(call_list)
        tok.apply_chat_template(turn2, add_generation_prompt=True, tokenize=True)
        decode(answer_list)
        await env.run_rollout(row, client, "stub", {})

    return {
        "ToolEnv.rollout (2 turns, no scoring)": many(lambda: env.rollout(row, client, "stub", {})),
        "ToolEnv.run_rollout (rollout + rubric + output)": many(lambda: env.run_rollout(row, client, "stub", {})),
        "run_rollout + decode + 2x apply_chat_template ids": many(with_tokens),
    }


# -- part 2: vector step -------------------------------------------------------------------------


def consuming(batches: list, body: Callable[[object], None]) -> Runner:
    """A runner that plays the next n prepared batches on each call (never one twice)."""
    cursor = {"at": 0}

    def run(n: int) -> None:
        start = cursor["at"]
        if start + n > len(batches):
            raise RuntimeError(f"only {len(batches) - start} prepared batches left, {n} asked")
        cursor["at"] = start + n
        for batch in batches[start : start + n]:
            body(batch)

    return run


def answer_text(slot: int, answer: str, slow: bool = True) -> str:
    """The action of env `slot` of a batch: 5 of 8 right for llmenv (4 for gem's grader); 2 of 8 need sympy."""
    try:
        v = int(answer)
    except ValueError:
        v = round(float(answer))
    head = "Let me compute it step by step. The answer is "
    if not slow and slot % 8 >= 6:  # the fast-path-only variant: a plain right and a plain wrong answer instead
        return head + (f"\\boxed{{{v}}}." if slot % 8 == 6 else f"\\boxed{{{v - 1}}}.")
    return (
        head
        + [
            f"\\boxed{{{v}}}.",  # right, plain
            f"\\boxed{{{v}}}.",  # right, plain
            f"\\boxed{{{v + 1}}}.",  # wrong, plain
            f"{v}.",  # no \boxed (llmenv reads "The answer is"; gem's grader finds nothing)
            f"\\boxed{{\\frac{{{2 * v}}}{{2}}}}.",  # right, LaTeX fraction (llmenv: in-process fast path)
            f"\\boxed{{\\frac{{{2 * v + 1}}}{{2}}}}.",  # wrong, LaTeX fraction
            f"\\boxed{{{v - 1} + 1}}.",  # right, needs a symbolic evaluation (llmenv: sympy slow path)
            f"\\boxed{{\\sqrt{{{v * v + 1}}}}}.",  # wrong, sympy slow path
        ][slot % 8]
    )


def llmenv_batch_actions(tok, batches: int, slow: bool = True) -> tuple[list[int], list[list[np.ndarray]]]:
    """First seeds and pre-encoded actions of `batches` fresh batches (env i of a batch gets seed first + i)."""
    import llmenv  # noqa: PLC0415

    scratch = llmenv.make("llmenv/arith-v0", tokenizer=tok, verifier=trivial)
    firsts, actions = [], []
    for _ in range(batches):
        first = Seeds.take(BATCH)
        answers = [scratch.reset(seed=first + i)[1]["task"].answer for i in range(BATCH)]
        firsts.append(first)
        actions.append([encode_action(tok, answer_text(i, a, slow)) for i, a in enumerate(answers)])
    return firsts, actions


def llmenv_vector_rows(tok) -> list[Row]:
    import llmenv  # noqa: PLC0415
    from llmenv.vector import VectorLLMEnv  # noqa: PLC0415

    vec = VectorLLMEnv("llmenv/arith-v0", BATCH, tok, autoreset=False)
    singles = [llmenv.make("llmenv/arith-v0", tokenizer=tok) for _ in range(BATCH)]

    # check once: the vector env draws the tasks the actions were built for, and the mix is as designed
    firsts, actions = llmenv_batch_actions(tok, 1)
    _, info = vec.reset(seed=firsts[0])
    _, rewards, term, _, info = vec.step(actions[0])
    paths = [v.details.get("path") for v in info["verdict"]]
    assert term.all() and rewards.sum() == BATCH // 8 * 5, rewards  # right: slots 0, 1, 3 ("The answer is v"), 4, 6
    assert paths.count("slow") == BATCH // 4, paths

    def vector(units: int, slow: bool = True) -> Runner:
        def body(batch) -> None:
            first, acts = batch
            vec.reset(seed=first)
            vec.step(acts)

        return consuming(list(zip(*llmenv_batch_actions(tok, units, slow))), body)

    def loop(units: int, slow: bool = True) -> Runner:
        def body(batch) -> None:
            first, acts = batch
            for i, (env, act) in enumerate(zip(singles, acts)):
                env.reset(seed=first + i)
                env.step(act)

        return consuming(list(zip(*llmenv_batch_actions(tok, units, slow))), body)

    return [
        Row("vector", "llmenv", "VectorLLMEnv(arith-v0, 64).reset + step", BATCH, vector),
        Row("vector", "llmenv", "loop over 64 llmenv.make envs (reset + step)", BATCH, loop),
        Row("vector", "llmenv", "VectorLLMEnv, fast-path-only mix (no sympy)", BATCH, lambda u: vector(u, slow=False)),
        Row(
            "vector", "llmenv", "loop over 64 envs, fast-path-only mix (no sympy)", BATCH, lambda u: loop(u, slow=False)
        ),
    ]


GEM_NOTES: list[str] = []


def gem_vector_rows(tok, *, with_mp: bool) -> list[Row]:
    import gem  # noqa: PLC0415
    from datasets import Dataset  # noqa: PLC0415
    from gem.vector.vector_env import AutoresetMode  # noqa: PLC0415

    import llmenv  # noqa: PLC0415

    decode = fast_decode(tok)
    # gem's math: envs load a hub dataset; give MathEnv the same arithmetic tasks as a local Dataset
    scratch = llmenv.make("llmenv/arith-v0", tokenizer=tok, verifier=trivial)
    tasks = [scratch.reset(seed=s)[1]["task"] for s in range(4096)]
    dataset = Dataset.from_dict({"problem": [t.prompt for t in tasks], "answer": [t.answer for t in tasks]})

    def vec_env(env_id: str, **kwargs):
        stdout, sys.stdout = sys.stdout, io.StringIO()  # make_vec prints "SyncVectorEnv with 64 environments."
        try:
            env = gem.make_vec([env_id] * BATCH, **kwargs)
        finally:
            sys.stdout = stdout
        # llmenv's rows reset explicitly (autoreset=False); gem's default SAME_STEP would also reset inside step
        env.autoreset_mode = AutoresetMode.NEXT_STEP
        return env

    def math_rows(label: str, env) -> list[Row]:
        def prepared(units: int, decoded: bool) -> Runner:
            firsts, texts, ids = [], [], []
            for _ in range(units):  # MathEnv.reset(seed) picks a row from the seed alone: replaying it is exact
                first = Seeds.take(BATCH)
                env.reset(seed=first)
                batch_texts = [answer_text(i, e.answer) for i, e in enumerate(env.envs)]
                firsts.append(first)
                texts.append(batch_texts)
                ids.append([encode_action(tok, t).tolist() for t in batch_texts])

            def body(batch) -> None:
                first, batch_texts, batch_ids = batch
                env.reset(seed=first)
                env.step([decode(a) for a in batch_ids] if decoded else batch_texts)

            return consuming(list(zip(firsts, texts, ids)), body)

        return [
            Row("vector", "gem", f"make_vec {label} (text in)", BATCH, lambda u: prepared(u, False)),
            Row("vector", "gem", f"make_vec {label} + decode", BATCH, lambda u: prepared(u, True)),
        ]

    math_env = vec_env("math:GSM8K", dataset=dataset, use_mp=False)
    first = Seeds.take(BATCH)
    math_env.reset(seed=first)
    texts = [answer_text(i, e.answer) for i, e in enumerate(math_env.envs)]
    math_env.reset(seed=first)
    _, rewards, _, _, _ = math_env.step(texts)
    GEM_NOTES.append(
        f"gem MathEnv check batch: {int(rewards.sum())} of {BATCH} rewarded 1 "
        "(llmenv rewards 40: gem's grader needs \\boxed, so slot 3 'The answer is v.' scores 0 there)"
    )
    rows = math_rows("MathEnv(use_mp=False), arith tasks", math_env)
    if with_mp:
        rows += math_rows("MathEnv(use_mp=True, default)", vec_env("math:GSM8K", dataset=dataset))[:1]

    # reasoning-gym's arithmetic: its tasks are its own, so the actions are the llmenv batch's texts
    # (the grade is a string comparison whose cost does not depend on being right)
    rg_env = vec_env("rg:basic_arithmetic")
    failures = {"count": 0, "error": ""}
    for sub in rg_env.envs:  # reasoning-gym 0.1.23 raises ZeroDivisionError for a few seeds; redraw

        def safe_reset(seed=None, _reset=sub.reset):
            for attempt in range(100):
                try:
                    return _reset(seed=None if seed is None else seed + attempt * 1_000_003)
                except ZeroDivisionError as exc:
                    failures["count"] += 1
                    failures["error"] = f"{type(exc).__name__}: {exc}"
            raise RuntimeError("reset failed 100 times in a row")

        sub.reset = safe_reset

    def rg(units: int, decoded: bool) -> Runner:
        firsts, actions = llmenv_batch_actions(tok, units)
        texts = [[decode(a.tolist()) for a in acts] for acts in actions]
        ids = [[a.tolist() for a in acts] for acts in actions]

        def body(batch) -> None:
            first, batch_texts, batch_ids = batch
            rg_env.reset(seed=first)
            rg_env.step([decode(a) for a in batch_ids] if decoded else batch_texts)

        return consuming(list(zip(firsts, texts, ids)), body)

    class _Note:
        def __str__(self) -> str:
            return (
                f"gem rg:basic_arithmetic: {failures['count']} sub-env reset(s) raised {failures['error']} "
                "inside reasoning-gym; each was redrawn with another seed"
            )

    GEM_NOTES.append(_Note())  # type: ignore[arg-type]
    rows += [
        Row("vector", "gem", "make_vec rg:basic_arithmetic (text in)", BATCH, lambda u: rg(u, False)),
        Row("vector", "gem", "make_vec rg:basic_arithmetic + decode", BATCH, lambda u: rg(u, True)),
    ]
    return rows


# -- timing ----------------------------------------------------------------------------------------


def calibrate(row: Row, *, target_s: float, min_units: int, max_units: int) -> None:
    """Warm the row up and pick the units per repetition (~target_s); vector rows probe at most 17 batches."""
    probe = row.build(32)  # type: ignore[misc]  (a tool runner ignores the count)
    probe(2)  # warm-up: caches, worker processes, lazy imports
    n, limit = 1, (8 if row.part == "vector" else 1_000_000)
    while True:
        t0 = time.perf_counter()
        probe(n)
        elapsed = time.perf_counter() - t0
        if elapsed > 0.1 or n * 2 > limit:
            break
        n *= 2
    row.units = min(max_units, max(min_units, int(n * target_s / max(elapsed, 1e-9))))


def time_once(run: Runner, units: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    run(units)
    return (time.perf_counter() - t0) / units * 1e6


# -- report ----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "llmenv",
        "verifiers",
        "gem-llm",
        "reasoning-gym",
        "gymnasium",
        "openai",
        "datasets",
        "pydantic",
        "transformers",
        "tokenizers",
        "numpy",
        "math-verify",
        "sympy",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        import subprocess  # noqa: PLC0415

        import llmenv  # noqa: PLC0415

        head = subprocess.run(
            ["git", "-C", os.path.dirname(os.path.dirname(llmenv.__file__)), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if head.returncode == 0:
            out["llmenv"] += f" (checkout at {head.stdout.strip()}, plus any uncommitted changes)"
    except Exception:  # noqa: BLE001, S110
        pass
    return out


def print_tables(rows: list[Row]) -> None:
    for part, unit, title in (
        ("tool", "µs/episode", "two-turn tool episode"),
        ("vector", "µs/batch", "reset + step of 64 episodes"),
    ):
        subset = [r for r in rows if r.part == part]
        if not subset:
            continue
        base = next((r.median_us for r in subset if r.library == "llmenv" and r.median_us), None)
        print(f"\n{title}:\n")
        header = (
            f"| {'library':<9} | {'what':<54} | {unit + ' median':>17} | {'min':>9} | "
            f"{'episodes/s':>10} | {'row / llmenv':>12} |"
        )
        print(header)
        print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
        for r in subset:
            if r.median_us is None:
                print(f"| {r.library:<9} | {r.what:<54} | {'n/a':>17} | {'':>9} | {'':>10} | {'':>12} |  {r.note}")
                continue
            ratio = f"{r.median_us / base:.2f}x" if base else "n/a"
            print(
                f"| {r.library:<9} | {r.what:<54} | {r.median_us:17,.1f} | {r.min_us:9,.1f} | "
                f"{r.per_unit * 1e6 / r.median_us:10,.0f} | {ratio:>12} |"
            )


def profile_tool(tok, episodes: int, top: int) -> None:
    run = llmenv_tool_runner(tok)
    run(200)
    profiler = cProfile.Profile()
    profiler.enable()
    run(episodes)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(key).print_stats(top)
        text = buffer.getvalue()
        print(f"\n### cProfile, llmenv ToolEnv episode, {episodes} episodes, sorted by {key} (times in s)\n")
        print(text[text.find("   ncalls") :].rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true", help="3 short repetitions per row")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per row (default 7, quick 3)")
    parser.add_argument("--target-s", type=float, default=None, help="seconds per repetition (default 1.0, quick 0.3)")
    parser.add_argument("--parts", default="tool,vector", help="comma-separated subset of tool,vector")
    parser.add_argument(
        "--gem-mp",
        action="store_true",
        help="also time gem MathEnv with its default use_mp=True (a multiprocessing.Pool(1) per env: 64 processes)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile of llmenv's tool episode")
    parser.add_argument("--profile-top", type=int, default=10)
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    target_s = args.target_s or (0.3 if args.quick else 1.0)
    parts = {p.strip() for p in args.parts.split(",")}

    from llmenv.models import load_tokenizer  # noqa: PLC0415

    t0 = time.perf_counter()
    tok = load_tokenizer(args.tokenizer)
    print(
        f"tokenizer: {args.tokenizer} via llmenv.models.load_tokenizer ({type(tok).__name__}, vocab {len(tok)}), "
        f"loaded in {time.perf_counter() - t0:.1f}s"
    )
    print(
        f"tool episode actions: call {len(encode_action(tok, CALL_TEXT))} tokens {CALL_TEXT!r}, "
        f"answer {len(encode_action(tok, ANSWER_TEXT))} tokens {ANSWER_TEXT!r} (EOS included)"
    )
    print(
        f"repetitions: {reps} x ~{target_s}s per row; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print()

    rows: list[Row] = []
    builders: list[tuple[str, str, Callable[[], list[Row]]]] = []
    if "tool" in parts:

        def tool_rows() -> list[Row]:
            run = llmenv_tool_runner(tok)
            return [Row("tool", "llmenv", "ToolEnv reset + step(call) + step(answer)", 1, lambda u, r=run: r)]

        def vf_rows() -> list[Row]:
            return [
                Row("tool", "verifiers", what, 1, lambda u, r=run: r)
                for what, run in verifiers_tool_runners(tok).items()
            ]

        builders += [("tool", "llmenv", tool_rows), ("tool", "verifiers", vf_rows)]
    if "vector" in parts:
        builders += [
            ("vector", "llmenv", lambda: llmenv_vector_rows(tok)),
            ("vector", "gem", lambda: gem_vector_rows(tok, with_mp=args.gem_mp)),
        ]

    active: list[tuple[Row, Runner]] = []
    for part, library, build in builders:
        try:
            built = build()
        except Exception as exc:  # noqa: BLE001 - report and go on
            message = f"{type(exc).__name__}: {exc}"
            print(f"!! {library} ({part}): could not be set up: {message}", flush=True)
            rows.append(Row(part, library, "(not measured)", 1, note=message))
            continue
        for row in built:
            rows.append(row)
            try:
                calibrate(
                    row,
                    target_s=target_s,
                    min_units=1000 if part == "tool" else 3,
                    max_units=10**6 if part == "tool" else 60,
                )
                run = row.build(row.units * (1 if part == "tool" else reps))  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001
                row.note = f"{type(exc).__name__}: {exc}"
                print(f"!! {library} {row.what}: failed: {row.note}", flush=True)
                continue
            active.append((row, run))
            print(
                f"  calibrated {library:<9} {row.what:<54} {row.units} {'episodes' if part == 'tool' else 'batches'}"
                " per repetition",
                flush=True,
            )

    samples: dict[int, list[float]] = {id(row): [] for row, _ in active}
    for rep in range(reps):
        for row, run in active:
            if row.note:
                continue
            try:
                # a vector runner plays the next row.units fresh, pre-encoded batches each repetition
                samples[id(row)].append(time_once(run, row.units))
            except Exception as exc:  # noqa: BLE001
                row.note = f"{type(exc).__name__}: {exc}"
                print(f"!! {row.library} {row.what}: failed: {row.note}", flush=True)
        print(f"  repetition {rep + 1}/{reps} done", flush=True)
    for row, _ in active:
        row.samples = samples[id(row)]
        if not row.note and row.samples:
            row.median_us, row.min_us = statistics.median(row.samples), min(row.samples)
    for note in GEM_NOTES:
        print(f"note: {note}")

    print_tables(rows)
    print(
        "\nrow / llmenv = median time of the row / median of the first llmenv row of its table "
        "(above 1: slower than llmenv)."
    )
    print("\nevery repetition in the order run (µs per unit):")
    for row in rows:
        if row.samples:
            print(f"  {row.library:<9} {row.what:<54} " + " ".join(f"{x:,.0f}" for x in row.samples))

    if args.profile and "tool" in parts:
        profile_tool(tok, 2000 if args.quick else 10000, args.profile_top)


if __name__ == "__main__":
    main()
