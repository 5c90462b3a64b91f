"""The `llmenv` command: list tasks, roll a model out, evaluate it, train it, and run the demo.

`llmenv tasks` lists registered ids; `llmenv rollout --task ID --model M` plays episodes and reports
mean reward and accuracy (optionally writing every episode, `Episode.to_json`, to JSONL); `llmenv
eval` reports held-out mean reward and pass@k; `llmenv train grpo|ppo|online-dpo` trains a policy on
a task, `llmenv train sft` fine-tunes one on conversations (`--data`) or on a task's verified samples
(`--task`), `llmenv train dpo --data FILE` trains one on preference pairs (DPO, its variants or KTO)
and `llmenv train rm --data FILE` a Bradley-Terry reward model on them; `llmenv pairs` makes pairs
from a task (sampled completions, solved vs unsolved) and `llmenv cai` from a constitution (chosen =
the model's revision of its response after its own critique); `llmenv demo` trains the embedded
SmolLM2-135M-Instruct on `llmenv/arith-demo-v0` and measures before and after. This module
parses arguments and prints; the loops live in `llmenv.agents`. Errors llmenv raises on purpose are
printed as one line (no traceback), and Ctrl-C ends with one line saying how to continue.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import llmenv
from llmenv.agents import dpo, grpo, online_dpo, ppo, prm, rm, sft
from llmenv.agents.config import add_config_flags, config_from_args, parse_params, to_flags
from llmenv.agents.dpo import DPOConfig
from llmenv.agents.grpo import GRPOConfig
from llmenv.agents.online_dpo import OnlineDPOConfig
from llmenv.agents.ppo import PPOConfig
from llmenv.agents.prm import PRMConfig
from llmenv.agents.rm import RMConfig
from llmenv.agents.sft import SFTConfig
from llmenv.agents.trainer import native_bf16, resolve_device
from llmenv.errors import ConfigError, LLMEnvError

console = Console()

DEMO_TASK = "llmenv/arith-demo-v0"


def cmd_tasks(args: argparse.Namespace) -> int:
    """Print every registered task id with its description."""
    from llmenv.registry import list_tasks, spec

    table = Table("task id", "env", "description")
    for task_id in list_tasks():
        task_spec = spec(task_id)
        table.add_row(task_id, task_spec.env, task_spec.description)
    console.print(table)
    return 0


def _load(model_name: str) -> tuple[Any, Any]:
    from llmenv.models import load_model, load_tokenizer

    with console.status(f"loading {model_name}"):
        return load_tokenizer(model_name), load_model(model_name)


def _report(episodes: list[Any], result: Any, *, show: int, elapsed: float) -> None:
    table = Table("seed", "prompt", "completion", "reward", show_lines=True)
    for e in episodes[:show]:
        prompt = str(e.task.prompt if isinstance(e.task.prompt, str) else e.task.prompt[-1]["content"])
        table.add_row(str(e.seed), escape(prompt[:120]), escape(" | ".join(e.completions)[:300]), f"{e.reward:.2f}")
    console.print(table)
    console.print(
        f"episodes: {len(episodes)}  mean reward: [bold]{result.mean_reward:.3f}[/]  accuracy: "
        f"[bold]{result.pass_at_1:.1%}[/]  verifier errors: {result.error_fraction:.1%}  time: {elapsed:.1f}s"
    )


def _sample(args: argparse.Namespace, params: dict[str, Any], *, samples: int, label: str) -> list[Any]:
    """Load `--model`, play `--n` tasks `samples` times each with the command's sampling flags, show progress."""
    from rich.progress import Progress

    from llmenv.agents.evaluate import play
    from llmenv.agents.policy import HFPolicy, SamplingParams

    tokenizer, model = _load(args.model)
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"{label} {args.task}", total=args.n * samples)
        return play(
            args.task,
            HFPolicy(model, tokenizer, batch_size=args.batch_size),
            tokenizer,
            n=args.n,
            samples=samples,
            sampling=sampling,
            batch_size=args.batch_size,
            seed=args.seed,
            task_params=params,
            on_batch=lambda done: progress.update(bar, completed=done),
        )


def cmd_rollout(args: argparse.Namespace) -> int:
    """Roll a model out on a task and report mean reward and accuracy; optionally write the episodes."""
    from llmenv.agents.evaluate import score

    params = parse_params(args.param)
    if args.system_prompt is not None:
        params["system_prompt"] = args.system_prompt
    llmenv.registry.spec(args.task)  # an unknown task fails before the model loads
    started = time.perf_counter()
    episodes = _sample(args, params, samples=1, label="rolling out")
    _report(episodes, score(args.task, episodes, 1), show=args.show, elapsed=time.perf_counter() - started)
    if args.out:
        _write_jsonl(args.out, [e.to_json() for e in episodes])
        console.print(f"wrote {len(episodes)} episodes to {args.out}")
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    """Sample completions of a task, pair solved with unsolved ones per prompt and write them as JSONL."""
    from llmenv.agents.pairs import pairs_from_episodes

    if args.samples < 2:
        raise ConfigError(f"--samples must be >= 2 to make pairs, got {args.samples}")
    params = parse_params(args.param)
    threshold = llmenv.registry.spec(args.task).pass_threshold  # an unknown task fails before the model loads
    episodes = _sample(args, params, samples=args.samples, label="sampling")
    rows, stats = pairs_from_episodes(episodes, args.samples, threshold=threshold, max_per_prompt=args.max_per_prompt)
    _write_jsonl(args.out, rows)
    console.print(f"wrote {escape(stats.describe())} to {escape(args.out)}")
    return 0


def _write_jsonl(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)


def cmd_cai(args: argparse.Namespace) -> int:
    """Constitutional AI: a response, a critique and a revision per sample; writes SFT rows and preference pairs."""
    from rich.progress import Progress

    from llmenv.agents.cai import (
        constitutional_samples,
        preference_rows,
        prompts_from_file,
        prompts_from_task,
        sft_rows,
    )
    from llmenv.agents.policy import HFPolicy
    from llmenv.constitution import load_constitution
    from llmenv.verifiers.judge import PolicyBackend

    constitution = load_constitution(args.constitution)  # a bad file, task or prompts file fails before the model loads
    if args.task is not None:
        llmenv.registry.spec(args.task)
    prompts = prompts_from_file(args.prompts, n=args.n) if args.prompts is not None else None
    tokenizer, model = _load(args.model)
    if prompts is None:
        prompts = prompts_from_task(
            args.task, tokenizer, n=args.n or 16, seed=args.seed, params=parse_params(args.param)
        )
    backend = PolicyBackend(
        HFPolicy(model, tokenizer, batch_size=args.batch_size),
        tokenizer,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"critique and revise ({constitution.name})", total=len(prompts) * args.samples)
        samples = constitutional_samples(
            backend,
            prompts,
            constitution,
            samples=args.samples,
            seed=args.seed,
            batch_size=args.batch_size,
            on_batch=lambda done: progress.update(bar, completed=done),
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs, stats = preference_rows(samples)
    _write_jsonl(str(out / "samples.jsonl"), [s.to_json() for s in samples])
    _write_jsonl(str(out / "sft.jsonl"), sft_rows(samples))
    _write_jsonl(str(out / "pairs.jsonl"), pairs)
    console.print(f"{escape(stats.describe())}\nwrote {escape(str(out))}/samples.jsonl, sft.jsonl and pairs.jsonl")
    return 0


def _eval_line(result: Any) -> str:
    line = f"{result.task}: {result.tasks} tasks x {result.samples} samples  mean reward {result.mean_reward:.3f}  "
    line += f"pass@1 {result.pass_at_1:.3f}" + "".join(
        f"  pass@{k} {v:.3f}" for k, v in sorted(result.pass_at_k.items()) if k != 1
    )
    if result.error_fraction:
        line += f"  verifier errors {result.error_fraction:.1%}"
    return line


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on held-out tasks: mean reward, pass@1 and pass@k."""
    from llmenv.agents.evaluate import evaluate

    llmenv.registry.spec(args.task)
    tokenizer, model = _load(args.model)
    result = evaluate(
        args.task,
        model,
        tokenizer,
        n=args.n,
        samples=max(args.samples, args.k),
        ks=(1, args.k),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        task_params=parse_params(args.param),
    )
    console.print(_eval_line(result))
    return 0


def _resume_command(learner: str, config: Any) -> str:
    """The command that continues an interrupted run from its checkpoint."""
    return shlex.join(["llmenv", "train", learner, *to_flags(dataclasses.replace(config, resume=True))])


def _train(learner: str, config: Any, train: Callable[[Any], Any]) -> int:
    """Run a learner's `train(config)` and report where the metrics, plot and weights are (130 when interrupted)."""
    if getattr(config, "task", ""):  # an unknown task fails before anything loads (`train prm` may have none)
        llmenv.registry.spec(config.task)
    state = train(config)
    out = config.out
    if state.interrupted:
        console.print(f"stopped at step {state.step}/{config.steps}; continue with: {_resume_command(learner, config)}")
        return 130
    final = f"  weights: {out}/final" if config.save_final else ""
    console.print(f"metrics: {out}/metrics.jsonl  plot: {out}/reward.png{final}")
    return 0


def cmd_train_grpo(args: argparse.Namespace) -> int:
    """Train with GRPO."""
    return _train("grpo", config_from_args(GRPOConfig, args), grpo.train)


def cmd_train_ppo(args: argparse.Namespace) -> int:
    """Train with PPO (a critic, GAE over policy tokens)."""
    return _train("ppo", config_from_args(PPOConfig, args), ppo.train)


def cmd_train_online_dpo(args: argparse.Namespace) -> int:
    """Train with online DPO (pairs of the policy's own samples ranked by the env's reward)."""
    return _train("online-dpo", config_from_args(OnlineDPOConfig, args), online_dpo.train)


def cmd_train_rm(args: argparse.Namespace) -> int:
    """Train a Bradley-Terry reward model on preference pairs."""
    return _train("rm", config_from_args(RMConfig, args), rm.train)


def cmd_train_prm(args: argparse.Namespace) -> int:
    """Train a process reward model on step-labelled solutions."""
    return _train("prm", config_from_args(PRMConfig, args), prm.train)


def cmd_train_dpo(args: argparse.Namespace) -> int:
    """Train a policy offline on preference pairs (DPO and its family) or KTO rows."""
    return _train("dpo", config_from_args(DPOConfig, args), dpo.train)


def cmd_train_sft(args: argparse.Namespace) -> int:
    """Supervised fine-tuning on conversations, or on a task's verified samples (rejection sampling)."""
    return _train("sft", config_from_args(SFTConfig, args), sft.train)


def cmd_demo(args: argparse.Namespace) -> int:
    """GRPO on the embedded SmolLM2-135M-Instruct: held-out accuracy before, training, accuracy after."""
    from llmenv.agents.evaluate import evaluate
    from llmenv.agents.grpo import train
    from llmenv.agents.runlog import plot_metrics

    console.print(
        f"[bold]llmenv demo[/]: GRPO on {args.model}, task {DEMO_TASK} (one-digit + and -). Training reward: "
        "correct boxed answer 1 + exactly one \\boxed{} 0.5 + correct final number 0.25. "
        'Accuracy = correct answer (boxed, or after "the answer is").'
    )
    started = time.perf_counter()
    tokenizer, model = _load(args.model)

    def accuracy(policy_model: Any) -> Any:
        return evaluate(
            DEMO_TASK,
            policy_model,
            tokenizer,
            n=args.eval_n,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )

    with console.status("held-out accuracy before training (greedy)"):
        before = accuracy(model)
    console.print(f"before: accuracy {before.pass_at_1:.1%} on {before.tasks} held-out problems")
    del model
    config = GRPOConfig(
        task=DEMO_TASK,
        model=args.model,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        lr=args.lr,
        seed=args.seed,
        out=args.out,
        bf16=native_bf16(resolve_device("auto")) if args.bf16 is None else args.bf16,
        save_every=0,
    )
    state = train(config)
    if state.interrupted:
        console.print(f"demo stopped at step {state.step}; continue training with: {_resume_command('grpo', config)}")
        return 130
    with console.status("held-out accuracy after training (greedy)"):
        after = accuracy(state.model)
    table = Table("", "held-out accuracy", "mean reward")
    table.add_row("before", f"{before.pass_at_1:.1%}", f"{before.mean_reward:.3f}")
    table.add_row("after", f"{after.pass_at_1:.1%}", f"{after.mean_reward:.3f}")
    console.print(table)
    plot_metrics(
        config.out,
        title=f"GRPO on {DEMO_TASK} ({args.model}), seed {args.seed}",
        marks={
            f"held-out accuracy before {before.pass_at_1:.1%}": before.pass_at_1,
            f"held-out accuracy after {after.pass_at_1:.1%}": after.pass_at_1,
        },
    )
    console.print(
        f"{after.tasks} held-out problems, greedy decoding; change {after.pass_at_1 - before.pass_at_1:+.1%} in "
        f"{time.perf_counter() - started:.0f}s. Metrics: {config.out}/metrics.jsonl, plot: {config.out}/reward.png, "
        f"weights: {config.out}/final\nreproduce the after figure with: llmenv eval --task {DEMO_TASK} "
        f"--model {config.out}/final --n {args.eval_n} --max-new-tokens {args.max_new_tokens} "
        f"--batch-size {args.batch_size}"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `llmenv` command."""
    parser = argparse.ArgumentParser(prog="llmenv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"llmenv {llmenv.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter

    sub.add_parser("tasks", help="list registered tasks").set_defaults(func=cmd_tasks)

    def add_generation_args(p: argparse.ArgumentParser, n: int) -> None:
        p.add_argument("--task", required=True, help="registered task id, e.g. llmenv/arith-v0")
        p.add_argument("--model", default="smollm2-135m", help="local path, hub id or smollm2-135m")
        p.add_argument("--n", type=_positive_int, default=n, help="number of tasks")
        p.add_argument("--batch-size", type=_positive_int, default=16, help="episodes generated together")
        p.add_argument("--max-new-tokens", type=_positive_int, default=128, help="generation budget per turn")
        p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="task parameter (repeatable)")

    ro = sub.add_parser("rollout", help="play episodes of a task with a model", formatter_class=defaults)
    add_generation_args(ro, 16)
    ro.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
    ro.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ro.add_argument("--top-p", type=float, default=1.0)
    ro.add_argument("--system-prompt", default=None)
    ro.add_argument("--show", type=int, default=4, help="episodes to print")
    ro.add_argument("--out", default=None, help="write every episode to this JSONL file (Episode.to_json)")
    ro.set_defaults(func=cmd_rollout)

    ev = sub.add_parser("eval", help="held-out mean reward, pass@1 and pass@k of a model", formatter_class=defaults)
    add_generation_args(ev, 32)
    ev.add_argument("--k", type=_positive_int, default=1, help="report pass@k (samples k completions per task)")
    ev.add_argument("--samples", type=_positive_int, default=1, help="completions per task (at least k)")
    ev.add_argument("--temperature", type=float, default=None, help="default: 0 for one sample, else 1")
    ev.set_defaults(func=cmd_eval)

    pa = sub.add_parser("pairs", help="preference pairs from a task (solved vs unsolved)", formatter_class=defaults)
    add_generation_args(pa, 64)
    pa.add_argument("--samples", type=_positive_int, default=4, help="completions sampled per prompt (>= 2)")
    pa.add_argument("--temperature", type=float, default=1.0)
    pa.add_argument("--top-p", type=float, default=1.0)
    pa.add_argument("--seed", type=int, default=0, help="first env seed, and the sampling seed")
    pa.add_argument("--max-per-prompt", type=_positive_int, default=4, help="pairs kept per prompt")
    pa.add_argument("--out", required=True, help="JSONL file of pairs (llmenv train rm --data reads it)")
    pa.set_defaults(func=cmd_pairs)

    cai = sub.add_parser(
        "cai",
        help="Constitutional AI data: response, critique, revision -> SFT rows and pairs",
        formatter_class=defaults,
    )
    source = cai.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", default=None, help="registered task id whose prompts to use")
    source.add_argument("--prompts", default=None, help='JSONL file of {"prompt": str | [messages]} rows')
    cai.add_argument("--model", default="smollm2-135m", help="local path, hub id or smollm2-135m")
    cai.add_argument("--constitution", default="default", help="JSON constitution file, or 'default' (built in)")
    cai.add_argument("--n", type=_positive_int, default=None, help="prompts to use; None: 16 of a task, all of a file")
    cai.add_argument("--samples", type=_positive_int, default=1, help="samples per prompt, each with its own principle")
    cai.add_argument("--seed", type=int, default=0, help="first env seed, principle draws and sampling seed")
    cai.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    cai.add_argument("--top-p", type=float, default=1.0)
    cai.add_argument("--max-new-tokens", type=_positive_int, default=256, help="generation budget per stage")
    cai.add_argument("--batch-size", type=_positive_int, default=16, help="samples generated together")
    cai.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="task parameter (repeatable)")
    cai.add_argument("--out", required=True, help="folder for samples.jsonl, sft.jsonl and pairs.jsonl")
    cai.set_defaults(func=cmd_cai)

    train = sub.add_parser("train", help="train a policy on a task, or a reward model on pairs or labelled steps")
    learners = train.add_subparsers(dest="learner", required=True)
    for learner, help_text, config_class, command in (
        ("grpo", "group-relative policy optimisation", GRPOConfig, cmd_train_grpo),
        ("ppo", "PPO with a critic (value head or separate model)", PPOConfig, cmd_train_ppo),
        ("online-dpo", "online DPO: pairs of the policy's samples, ranked by reward", OnlineDPOConfig,
         cmd_train_online_dpo),
        ("rm", "Bradley-Terry reward model on preference pairs (--data FILE)", RMConfig, cmd_train_rm),
        ("prm", "process reward model on step-labelled solutions (--data or --task)", PRMConfig, cmd_train_prm),
        ("dpo", "offline DPO/cDPO/rDPO/IPO/SimPO/ORPO on pairs, or KTO (--data FILE)", DPOConfig, cmd_train_dpo),
        ("sft", "fine-tuning on conversations (--data) or verified samples (--task)", SFTConfig, cmd_train_sft),
    ):  # fmt: skip
        flags = learners.add_parser(learner, help=help_text, description=config_class.__doc__)
        add_config_flags(flags, config_class)
        flags.set_defaults(func=command)

    demo = sub.add_parser(
        "demo", help="GRPO on the embedded SmolLM2: accuracy before and after", formatter_class=defaults
    )
    demo.add_argument("--model", default="smollm2-135m")
    demo.add_argument("--steps", type=_positive_int, default=20)
    demo.add_argument("--prompts-per-step", type=_positive_int, default=8)
    demo.add_argument("--group-size", type=_positive_int, default=4)
    demo.add_argument("--max-new-tokens", type=_positive_int, default=32)
    demo.add_argument("--lr", type=float, default=2e-5)
    demo.add_argument(
        "--eval-n", type=_positive_int, default=64, help="held-out problems for the before/after accuracy"
    )
    demo.add_argument("--batch-size", type=_positive_int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: when the device runs bf16 natively: CUDA, or a CPU with AVX-512 BF16 / AMX)",
    )
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `llmenv` console script: 0 on success, 2 on an llmenv error, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LLMEnvError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        hint = " (continue with --resume from the last checkpoint)" if args.command == "train" else ""
        console.print(f"[yellow]interrupted[/]{hint}")
        return 130


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run `main`, then exit without walking the whole heap once more."""
    code = main(argv)
    # Interpreter shutdown runs full garbage collections over every object torch and transformers
    # created (~0.6 s after a training run here); none is garbage the process needs collected.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
