"""The `llmenv` command: list tasks, roll a model out on a task, and run the demo.

`llmenv tasks` lists registered ids; `llmenv rollout --task ID --model M` plays episodes with a
transformers model and reports mean reward (optionally writing every episode to JSONL);
`llmenv demo` rolls the embedded SmolLM2-135M-Instruct out on `llmenv/arith-v0`. The commands
parse arguments and print; the work is done by the library.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs as task parameters; values are JSON when they parse, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--param expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def cmd_tasks(args: argparse.Namespace) -> int:
    """Print every registered task id with its description."""
    from llmenv.registry import list_tasks, spec

    table = Table("task id", "env", "description")
    for task_id in list_tasks():
        task_spec = spec(task_id)
        table.add_row(task_id, task_spec.env, task_spec.description)
    console.print(table)
    return 0


def rollout(
    task_id: str,
    model_name: str,
    *,
    n: int,
    batch_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    params: dict[str, Any],
    system_prompt: str | None = None,
) -> list[Any]:
    """Load the model, play `n` episodes of `task_id` in batches, return the Episodes."""
    from rich.progress import Progress

    from llmenv.agents.policy import HFPolicy, SamplingParams
    from llmenv.agents.rollout import rollout as play
    from llmenv.models import load_model, load_tokenizer
    from llmenv.vector import VectorLLMEnv

    with console.status(f"loading {model_name}"):
        tokenizer = load_tokenizer(model_name)
        model = load_model(model_name)
    extra = {"system_prompt": system_prompt} if system_prompt is not None else {}
    policy = HFPolicy(model, tokenizer, batch_size=batch_size)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    results = []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"rolling out {task_id}", total=n)
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            env = VectorLLMEnv(task_id, size, tokenizer, autoreset=False, **params, **extra)
            results.extend(play(env, policy, sampling, seed=seed + start))
            progress.update(bar, advance=size)
    return results


def _report(results: list[Any], *, show: int, elapsed: float) -> float:
    mean = sum(r.reward for r in results) / max(len(results), 1)
    solved = sum(1 for r in results if any(v.passed for v in r.verdicts))
    errors = sum(1 for r in results if any(v.error for v in r.verdicts))
    table = Table("seed", "prompt", "completion", "reward", show_lines=True)
    for r in results[:show]:
        prompt = str(r.task.prompt if isinstance(r.task.prompt, str) else r.task.prompt[-1]["content"])
        table.add_row(str(r.seed), prompt[:120], " | ".join(r.completions)[:300], f"{r.reward:.2f}")
    console.print(table)
    console.print(
        f"episodes: {len(results)}  mean reward: [bold]{mean:.3f}[/]  accuracy: [bold]{solved}/{len(results)} "
        f"({solved / max(len(results), 1):.1%})[/]  verifier errors: {errors}  time: {elapsed:.1f}s"
    )
    return mean


def cmd_rollout(args: argparse.Namespace) -> int:
    """Roll a model out on a task and report mean reward and accuracy."""
    started = time.perf_counter()
    results = rollout(
        args.task,
        args.model,
        n=args.n,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        params=_parse_params(args.param),
        system_prompt=args.system_prompt,
    )
    _report(results, show=args.show, elapsed=time.perf_counter() - started)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for r in results:
                fh.write(
                    json.dumps(
                        {
                            "seed": r.seed,
                            "prompt": r.prompt,
                            "answer": r.task.answer,
                            "completions": list(r.completions),
                            "reward": r.reward,
                            "parts": [dict(v.parts) for v in r.verdicts],
                            "errors": [v.error for v in r.verdicts],
                            "tokens": r.trajectory.tokens.tolist(),
                            "loss_mask": r.trajectory.loss_mask.tolist(),
                        }
                    )
                    + "\n"
                )
        console.print(f"wrote {len(results)} episodes to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Roll the embedded SmolLM2-135M-Instruct out on llmenv/arith-v0 and print accuracy and samples."""
    console.print(f"[bold]llmenv demo[/]: {args.model} on llmenv/arith-v0 (1-digit operands, + and -), greedy")
    started = time.perf_counter()
    results = rollout(
        "llmenv/arith-v0",
        args.model,
        n=args.n,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=0.0,
        top_p=1.0,
        seed=args.seed,
        params={"digits": 1, "ops": "+-"},
    )
    _report(results, show=args.show, elapsed=time.perf_counter() - started)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `llmenv` command."""
    parser = argparse.ArgumentParser(prog="llmenv", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("tasks", help="list registered tasks").set_defaults(func=cmd_tasks)

    def add_generation_args(p: argparse.ArgumentParser, n: int) -> None:
        p.add_argument("--model", default="smollm2-135m", help="local path, hub id or smollm2-135m")
        p.add_argument("--n", type=int, default=n, help="number of episodes")
        p.add_argument("--batch-size", type=int, default=16, help="episodes generated together")
        p.add_argument("--max-new-tokens", type=int, default=128)
        p.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
        p.add_argument("--show", type=int, default=4, help="episodes to print")

    ro = sub.add_parser("rollout", help="play episodes of a task with a model")
    ro.add_argument("--task", required=True, help="registered task id, e.g. llmenv/arith-v0")
    add_generation_args(ro, 16)
    ro.add_argument("--temperature", type=float, default=0.0)
    ro.add_argument("--top-p", type=float, default=1.0)
    ro.add_argument("--system-prompt", default=None)
    ro.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="task parameter (repeatable)")
    ro.add_argument("--out", default=None, help="write every episode to this JSONL file")
    ro.set_defaults(func=cmd_rollout)

    demo = sub.add_parser("demo", help="roll the embedded SmolLM2 out on llmenv/arith-v0")
    add_generation_args(demo, 32)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `llmenv` console script."""
    args = build_parser().parse_args(argv)
    from llmenv.errors import LLMEnvError

    try:
        return int(args.func(args))
    except LLMEnvError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
