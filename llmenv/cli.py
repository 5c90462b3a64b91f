"""The `llmenv` command: list tasks, roll a model out on a task, and run the demo.

`llmenv tasks` lists registered ids; `llmenv rollout --task ID --model M` plays episodes with a
transformers model and reports mean reward (optionally writing every episode to JSONL);
`llmenv demo` rolls the embedded SmolLM2-135M-Instruct out on `llmenv/arith-v0`. The commands
parse arguments and print; the work is done by the library.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

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


DEMO_TASK = "llmenv/arith-v0"
DEMO_TRAIN_TASK = "llmenv/arith-demo-v0"
DEMO_PARAMS = {
    "digits": 1,
    "ops": "+-",
    "terms": 2,
    "system_prompt": "Reply with only the final result, written as \\boxed{N}. For example: 3 + 4 = \\boxed{7}.",
}


def register_demo_task() -> None:
    """arith-v0 with a shaped training reward: boxed-correct 1, any correct final number 0.5, boxing 0.25."""
    from llmenv.registry import register_task
    from llmenv.tasks.arith import generate_arith
    from llmenv.verifiers.base import Rubric
    from llmenv.verifiers.format import BoxedFormat
    from llmenv.verifiers.math import MathVerifier

    reward = Rubric(
        {
            "correct": (MathVerifier(), 1.0),
            "number": (MathVerifier(fallback_last_number=True), 0.5),
            "format": (BoxedFormat(), 0.25),
        }
    )
    register_task(
        DEMO_TRAIN_TASK,
        source=generate_arith,
        verifier=reward,
        replace=True,
        description="arith-v0 with the demo's shaped reward",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """GRPO on the embedded SmolLM2-135M-Instruct: held-out accuracy before, training, accuracy after."""
    from llmenv.agents.evaluate import evaluate
    from llmenv.agents.grpo import GRPOConfig, train
    from llmenv.models import load_model, load_tokenizer

    console.print(
        f"[bold]llmenv demo[/]: GRPO on {args.model}, task {DEMO_TASK} {DEMO_PARAMS}. Training reward: correct "
        "boxed answer 1 + correct final number 0.5 + using \\boxed{} 0.25. Accuracy = correct boxed answer."
    )
    started = time.perf_counter()
    tokenizer, model = load_tokenizer(args.model), load_model(args.model)

    def accuracy(policy_model: Any) -> Any:
        return evaluate(
            DEMO_TASK,
            policy_model,
            tokenizer,
            n=args.eval_n,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            task_params=DEMO_PARAMS,
        )

    with console.status("held-out accuracy before training (greedy)"):
        before = accuracy(model)
    console.print(f"before: accuracy {before.pass_at_1:.1%} on {before.tasks} held-out problems")
    del model
    register_demo_task()
    config = GRPOConfig(
        task=DEMO_TRAIN_TASK,
        model=args.model,
        task_params=dict(DEMO_PARAMS),
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        seed=args.seed,
        out=args.out,
        bf16=args.bf16,
        save_every=args.steps,
    )
    state = train(config)
    with console.status("held-out accuracy after training (greedy)"):
        after = accuracy(state.model)
    table = Table("", "held-out accuracy", "mean reward")
    table.add_row("before", f"{before.pass_at_1:.1%}", f"{before.mean_reward:.3f}")
    table.add_row("after", f"{after.pass_at_1:.1%}", f"{after.mean_reward:.3f}")
    console.print(table)
    console.print(
        f"{after.tasks} held-out problems, greedy decoding; change {after.pass_at_1 - before.pass_at_1:+.1%} in "
        f"{time.perf_counter() - started:.0f}s. Metrics: {config.out}/metrics.jsonl, plot: {config.out}/reward.png, "
        f"checkpoint: {config.out}/checkpoint"
    )
    return 0


def _field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under each dataclass field (they document every config field once)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                docs[node.target.id] = str(following.value.value)
    return docs


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per dataclass field, typed from its default, with the field's docstring as help."""
    import dataclasses

    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if f.name == "task_params":
            parser.add_argument(
                "--param",
                dest="task_params",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="task parameter (repeatable), e.g. --param digits=1",
            )
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs.get(f.name))
        else:
            parser.add_argument(flag, type=type(default), default=default, help=docs.get(f.name))


def cmd_train_grpo(args: argparse.Namespace) -> int:
    """Train with GRPO and report where the metrics, plot and checkpoint are."""
    import dataclasses

    from llmenv.agents.grpo import GRPOConfig, train

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(GRPOConfig)}
    values["task_params"] = _parse_params(args.task_params)
    config = GRPOConfig(**values)
    train(config)
    out = config.out
    console.print(f"metrics: {out}/metrics.jsonl  plot: {out}/reward.png  checkpoint: {out}/checkpoint")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on held-out tasks: mean reward, pass@1 and pass@k."""
    from llmenv.agents.evaluate import evaluate
    from llmenv.models import load_model, load_tokenizer

    with console.status(f"loading {args.model}"):
        tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    samples = max(args.samples, args.k)
    result = evaluate(
        args.task,
        model,
        tokenizer,
        n=args.n,
        samples=samples,
        ks=(1, args.k),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        task_params=_parse_params(args.param),
    )
    line = f"{result.task}: {result.tasks} tasks x {result.samples} samples  mean reward {result.mean_reward:.3f}  "
    line += f"pass@1 {result.pass_at_1:.3f}" + "".join(
        f"  pass@{k} {v:.3f}" for k, v in sorted(result.pass_at_k.items()) if k != 1
    )
    console.print(line)
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

    train = sub.add_parser("train", help="train a policy on a task")
    learners = train.add_subparsers(dest="learner", required=True)
    from llmenv.agents.grpo import GRPOConfig

    grpo = learners.add_parser("grpo", help="group-relative policy optimisation")
    add_config_flags(grpo, GRPOConfig)
    grpo.set_defaults(func=cmd_train_grpo)

    ev = sub.add_parser("eval", help="held-out mean reward, pass@1 and pass@k of a model on a task")
    ev.add_argument("--task", required=True)
    ev.add_argument("--model", default="smollm2-135m")
    ev.add_argument("--n", type=int, default=32, help="held-out tasks")
    ev.add_argument("--k", type=int, default=1, help="report pass@k (samples k completions per task)")
    ev.add_argument("--samples", type=int, default=1, help="completions per task (at least k)")
    ev.add_argument("--temperature", type=float, default=None, help="default: 0 for one sample, else 1")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="task parameter (repeatable)")
    ev.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="GRPO on the embedded SmolLM2: accuracy before and after")
    demo.add_argument("--model", default="smollm2-135m")
    demo.add_argument("--steps", type=int, default=12)
    demo.add_argument("--prompts-per-step", type=int, default=8)
    demo.add_argument("--group-size", type=int, default=4)
    demo.add_argument("--max-new-tokens", type=int, default=32)
    demo.add_argument("--lr", type=float, default=1e-5)
    demo.add_argument("--eval-n", type=int, default=64, help="held-out problems for the before/after accuracy")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    demo.add_argument("--out", default="runs/demo")
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


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run `main`, then exit without walking the whole heap once more."""
    code = main(argv)
    # Interpreter shutdown runs full garbage collections over every object torch and transformers
    # created (~0.6 s after a training run here); none is garbage the process needs collected.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
