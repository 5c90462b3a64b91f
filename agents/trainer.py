"""What every learner shares around its update: config fields, loading, the step loop, logs, checkpoints, resume.

A learner file holds its config, its loss and its update; everything else a run needs is here,
written once: `LearnerConfig` (the fields every `llmenv train NAME` takes, each a flag),
`setup` (device check, resume point before anything loads, tokenizer, environment, the trained
model with LoRA / gradient checkpointing, its fused AdamW), `load_frozen` (a reference or reward
model that never trains), `play` (one rollout with the run's seeds), `rollout_metrics` (what every
learner logs about its episodes), and `train` / `fit` (gc handling, the step loop with its rich
progress line, metrics.jsonl / TensorBoard / reward.png, checkpoints with whatever extra state a
learner registers, exact resume, Ctrl-C at a step boundary, the final export, freed memory kept for
the next step: `allocator.reuse_freed_memory`). Small speed and safety tricks each have a named
function with a one-line reason. It never computes a loss.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

import torch

from llmenv.agents import gc_control
from llmenv.agents.allocator import reuse_freed_memory
from llmenv.agents.checkpoint import (
    checkpoint_step,
    export_final,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from llmenv.agents.config import above, at_least, check_config, option
from llmenv.agents.data import epoch_batch, eval_due
from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.agents.rollout import Episode, RolloutBatch, rollout, to_batch
from llmenv.agents.runlog import RunLog
from llmenv.errors import CheckpointError, ConfigError
from llmenv.models import load_model, load_reward_model, load_token_classifier, load_tokenizer
from llmenv.registry import spec as task_spec
from llmenv.vector import VectorLLMEnv
from llmenv.verifiers.process import ADAPTERS as PRM_ADAPTERS
from llmenv.verifiers.process import ProcessVerifier

TRAIN_SEED_STRIDE = 10**8
"""A run with seed s draws its step-t tasks from env seeds s * 10**8 + t * num_envs + i."""


@dataclass
class RunConfig:
    """The fields every learner takes, online or offline (`--data`), with the same flag and meaning in each."""

    model: str = option("smollm2-135m", "Model to train: local path, hub id or smollm2-135m.")
    steps: int = option(20, "Optimisation steps (online learners: one rollout each).", **at_least(1))
    lr: float = option(1e-6, "AdamW learning rate.", **above(0))
    weight_decay: float = option(0.0, "AdamW weight decay.", **at_least(0))
    seed: int = option(0, "Seeds model init, data order, rollouts and task draws.", **at_least(0))
    out: str = option("runs/train", "Folder for metrics.jsonl, reward.png, TensorBoard events and checkpoints.")
    resume: bool = option(False, "Continue from out/checkpoint (weights, optimizer, RNG, step).")
    save_every: int = option(
        10,
        "Write the resume checkpoint every this many steps (0: only on Ctrl-C).",
        **at_least(0),
    )
    save_final: bool = option(True, "Export the trained weights (or adapter) alone to out/final at the end.")
    micro_batch: int = option(8, "Sequences per forward/backward (gradient accumulation).", **at_least(1))
    max_grad_norm: float = option(
        1.0,
        "Clip gradients to this total norm (0 = no clipping, as TRL's PPOTrainer; norms are then not computed).",
        **at_least(0),
    )
    lora_rank: int = option(
        0,
        "Train a LoRA adapter of this rank through peft instead of all weights (0 = full).",
        **at_least(0),
    )
    gradient_checkpointing: bool = option(False, "Trade compute for memory in the backward pass.")
    bf16: bool = option(False, "bf16 autocast for the training forward/backward (CPU and GPU).")
    device: str = option("auto", '"auto" (CUDA when available), "cpu" or "cuda[:index]".')

    def __post_init__(self) -> None:
        check_config(self)


@dataclass
class LearnerConfig(RunConfig):
    """The fields every online learner takes (a task to roll out), with the same flag and meaning in each."""

    task: str = option("llmenv/arith-v0", "Registered task id (llmenv tasks lists them).")
    task_params: dict[str, Any] = option({}, "Task parameter passed to the environment")
    prompts_per_step: int = option(4, "Distinct tasks per step.", **at_least(1))
    group_size: int = option(1, "Completions per task.", **at_least(1))
    max_new_tokens: int = option(64, "Generation budget per policy turn.", **at_least(1))
    temperature: float = option(1.0, "Sampling temperature of rollouts.", **above(0))
    top_p: float = option(1.0, "Nucleus sampling mass of rollouts.", check=lambda p: 0 < p <= 1, expects="in (0, 1]")
    prm: str = option(
        "",
        "Process reward model folder: the task's verifier becomes ProcessVerifier(prm, outcome=task verifier), "
        "so each step's score is a dense reward (empty: the task's own rewards only).",
    )
    prm_adapter: str = option(
        "",
        "The PRM's head convention (separator, qwen, math-shepherd, rlhflow; empty: as llmenv train prm saved it).",
        check=lambda name: name == "" or name in PRM_ADAPTERS,
        expects=f"empty or one of {sorted(PRM_ADAPTERS)}",
    )
    prm_separator: str = option("\n", "How a completion splits into steps for --prm (default: one step per line).")
    outcome_weight: float = option(1.0, "Weight of the task's (outcome) reward in the advantage.", **at_least(0))
    process_weight: float = option(
        1.0, "Weight of per-step process rewards (Verdict.steps, e.g. from --prm); tasks without steps ignore it.",
        **at_least(0),
    )  # fmt: skip


@dataclass(kw_only=True)
class RunState:
    """What the shared loop carries between steps of any learner; a learner's state adds its own fields."""

    config: Any
    model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    device: torch.device
    extra_state: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Objects with `state_dict`/`load_state_dict` a checkpoint carries besides the policy and its optimizer."""
    step: int = 0
    resume_from: Path | None = None
    """The checkpoint this run continues from (None for a fresh run)."""
    interrupted: bool = False
    """The run stopped early on Ctrl-C (after saving a checkpoint)."""


@dataclass(kw_only=True)
class LearnerState(RunState):
    """An online learner's state: the run's plus the policy it samples with and the environment it steps."""

    policy: HFPolicy
    env: VectorLLMEnv


_State = TypeVar("_State", bound=RunState)
_Run = TypeVar("_Run", bound=RunState)
_Config = TypeVar("_Config", bound=RunConfig)


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu` or `cuda[:i]`; ConfigError when this torch cannot use it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a torch device; expected auto, cpu or cuda[:index]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(
            f"device={name!r} but torch {torch.__version__} ({build}) sees no CUDA GPU; use --device cpu or auto"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is not supported; expected auto, cpu or cuda[:index]")
    return device


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matmuls run natively on `device` (a CUDA GPU with bf16; a CPU with AVX-512 BF16 or AMX).

    Elsewhere bf16 autocast is emulated: on an AVX2-only CPU a bf16 matmul ran about 40x slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                 for flag in line.split(":", 1)[1].split()}  # fmt: skip
    except OSError:  # not Linux: assume emulated
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def own_weights(params: list[torch.nn.Parameter], device: torch.device) -> None:
    """Copy CPU weights out of a read-only file mapping once (else the first optimizer step faults per 4 KiB page)."""
    if device.type != "cpu":
        return
    with torch.no_grad():
        for p in params:
            p.data = p.data.clone()


def adamw(
    params: list[torch.nn.Parameter], *, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW, with torch's fused kernel where it has one (on CPU one step is ~4x faster than the default)."""
    fused = device.type in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.bfloat16) for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of `module` that learn (all of them, or a LoRA adapter's)."""
    return [p for p in module.parameters() if p.requires_grad]


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the gradients of `params` to total norm `max_norm` (as `clip_grad_norm_`); return the norm before.

    `clip_grad_norm_` multiplies every gradient by a clamped coefficient even when it is exactly 1, a
    full read and write of the gradients (~0.1 s per 135M-parameter step on 2 CPU cores); this scales
    only when the norm is over the bound, with torch's own coefficient, so the results are identical.
    `max_norm` 0 clips nothing and returns 0.0 without reading the gradients.
    """
    if max_norm == 0:
        return 0.0
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    norm = float(total)
    if not math.isfinite(norm) or norm + 1e-6 > max_norm:  # clip_grad_norm_'s coefficient is then below 1 (or nan)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return norm


def resume_point(out: str | Path, resume: bool) -> Path | None:
    """The checkpoint `--resume` continues from (CheckpointError when there is none); None for a fresh run."""
    if not resume:
        return None
    found = find_checkpoint(out)
    if found is None:
        raise CheckpointError(
            f"--resume: no checkpoint in {Path(out) / 'checkpoint'} (a run writes one every --save-every steps "
            "and when stopped with Ctrl-C); start without --resume or point --out at the earlier run"
        )
    checkpoint_step(found)  # unreadable progress fails here, before the model loads
    return found


def load_trainable(
    config: RunConfig,
    device: torch.device,
    model: str | None = None,
    *,
    scalar_head: bool = False,
    token_labels: int = 0,
) -> Any:
    """The model that learns (`config.model`, or `model`): LoRA-wrapped when asked, weights owned, checkpointing on.

    `scalar_head` loads it as a one-output sequence-classification model (a reward model or a critic
    with transformers' own head, `load_reward_model`); `token_labels` > 0 as a token classifier with
    that many labels (a process reward model, `load_token_classifier`); under LoRA a head trains in full.
    """
    source = model or config.model
    if token_labels:
        loaded: Any = load_token_classifier(source, num_labels=token_labels, device=device)
    else:
        loaded = (load_reward_model if scalar_head else load_model)(source, device=device)
    if config.lora_rank > 0:
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - peft is optional (LoRA runs only)

        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=2 * config.lora_rank,
            target_modules="all-linear",
            task_type="SEQ_CLS" if scalar_head else "TOKEN_CLS" if token_labels else None,  # the new head trains
        )
        loaded = get_peft_model(loaded, lora)
    if config.gradient_checkpointing:
        loaded.gradient_checkpointing_enable()
    own_weights(trainable(loaded), device)
    return loaded


def load_frozen(model: str, device: torch.device) -> Any:
    """A model that never trains (a reference policy): eval mode, no gradients."""
    return load_model(model, device=device).eval().requires_grad_(False)


def start_run(config: RunConfig) -> tuple[torch.device, Path | None]:
    """The run's device and resume checkpoint, checked before anything loads (a missing one fails fast); seeds torch."""
    device = resolve_device(config.device)
    resume_from = resume_point(config.out, config.resume)
    torch.manual_seed(config.seed)
    return device, resume_from


def load_learner(
    config: RunConfig, device: torch.device, *, scalar_head: bool = False, token_labels: int = 0
) -> tuple[Any, Any]:
    """The model that learns (see `load_trainable`) and its fused AdamW."""
    model = load_trainable(config, device, scalar_head=scalar_head, token_labels=token_labels)
    return model, adamw(trainable(model), lr=config.lr, weight_decay=config.weight_decay, device=device)


def setup(config: LearnerConfig) -> LearnerState:
    """Check the device and resume checkpoint, then load the env (verifiers booting), the model and its optimizer."""
    device, resume_from = start_run(config)
    tokenizer = load_tokenizer(config.model)
    verifier = None
    if config.prm:
        verifier = ProcessVerifier(
            config.prm,
            config.prm_adapter or None,
            separator=config.prm_separator.replace("\\n", "\n").replace("\\t", "\t"),  # a flag cannot hold a newline
            outcome=task_spec(config.task).verifier,
            device=device,
        )
    env = VectorLLMEnv(
        config.task,
        config.prompts_per_step * config.group_size,
        tokenizer,
        group_size=config.group_size,
        autoreset=False,
        **({"verifier": verifier} if verifier is not None else {}),
        **config.task_params,
    )
    env.prestart()  # verifier workers boot while the model loads
    model, optimizer = load_learner(config, device)
    return LearnerState(
        config=config,
        model=model,
        tokenizer=tokenizer,
        policy=HFPolicy(model, tokenizer),
        optimizer=optimizer,
        env=env,
        device=device,
        resume_from=resume_from,
    )


def extend(base: LearnerState, cls: type[_State], **fields: Any) -> _State:
    """A learner's own state (`cls`, a LearnerState subclass) holding what `setup` loaded plus `fields`."""
    shared = {f.name: getattr(base, f.name) for f in dataclasses.fields(LearnerState)}
    return cls(**{**shared, **fields})


def play(state: LearnerState) -> RolloutBatch:
    """One rollout of the step's tasks with the run's sampling and env seeds, packed as a batch."""
    return to_batch(play_episodes(state), pad_token_id=state.policy.pad_token_id)


def play_episodes(state: LearnerState) -> list[Episode]:
    """The episodes of one rollout of the step's tasks, with the run's sampling and env seeds."""
    cfg = state.config
    sampling = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed * 1_000_003 + state.step,
    )
    env_seed = cfg.seed * TRAIN_SEED_STRIDE + state.step * state.env.num_envs  # far below EVAL_SEED_OFFSET
    return rollout(state.env, state.policy, sampling, seed=env_seed)


def rollout_metrics(batch: RolloutBatch, *, generation_s: float, update_s: float, passes: int) -> dict[str, Any]:
    """What every learner logs about a step's episodes and speed (`passes`: optimisation passes over the batch)."""
    policy_tokens = int(batch.loss_mask.sum())
    return {
        "reward_mean": float(batch.rewards.mean()),
        "reward_std": float(batch.rewards.std(unbiased=False)),
        "verifier_error_fraction": float(batch.errored.float().mean()),
        **batch.stats,
        "tokens": policy_tokens,
        "cut_fraction": float(batch.cut.float().mean()),
        "generation_tokens_per_s": policy_tokens / max(generation_s, 1e-9),
        "update_tokens_per_s": policy_tokens * passes / max(update_s, 1e-9),
        "step_time_s": generation_s + update_s,
        **{f"parts/{name}": value for name, value in batch.parts.items()},
    }


def timed_step(
    state: LearnerState, update: Callable[[Any, RolloutBatch], dict[str, float]], *, passes: int
) -> dict[str, Any]:
    """One `play` and one `update(state, batch)`; advances `state.step`; the update's and the episodes' metrics."""
    started = time.perf_counter()
    batch = play(state)
    generated = time.perf_counter()
    metrics = update(state, batch)
    finished = time.perf_counter()
    state.step += 1
    shared = rollout_metrics(batch, generation_s=generated - started, update_s=finished - generated, passes=passes)
    return {"step": state.step, "reward_mean": shared["reward_mean"], **metrics, **shared}


def offline_step(
    state: _Run,
    rows: Sequence[Any],
    update: Callable[[_Run, list[Any]], dict[str, float]],
    evaluate: Callable[[_Run], dict[str, float]] | None,
    **logged: Any,
) -> dict[str, Any]:
    """One step of an offline learner: the step's rows of the seeded epoch order (`epoch_batch`), `update`,
    and `evaluate` (held-out metrics; None: no held-out rows) when `eval_due`; `logged` joins the row."""
    cfg = state.config
    started = time.perf_counter()
    metrics = update(state, [rows[i] for i in epoch_batch(len(rows), cfg.batch_size, cfg.seed, state.step)])
    state.step += 1
    epoch, due = eval_due(cfg, state.step, len(rows))
    row = {"step": state.step, **metrics, "epoch": epoch, **logged}
    if evaluate is not None and due:
        row.update(evaluate(state))
    row["step_time_s"] = time.perf_counter() - started
    return row


def train(
    config: _Config,
    build: Callable[[_Config], _State],
    step: Callable[[_State], dict[str, Any]],
    *,
    name: str,
    status: Callable[[dict[str, Any]], str],
    progress: bool = True,
    plot_key: str = "reward_mean",
    subject: str | None = None,
) -> _State:
    """Build a learner's state with the collector paused, then `fit` it with everything loaded frozen."""
    with gc_control.paused():  # loading allocates ~10^5 long-lived objects; collecting mid-load finds no garbage
        state = build(config)
    with gc_control.frozen(), reuse_freed_memory():  # no gc walks over the loaded objects; no page faults
        fit(  # for memory the last step freed
            state, step, name=name, status=status, progress=progress, plot_key=plot_key, subject=subject
        )
    return state


def fit(
    state: _State,
    step: Callable[[_State], dict[str, Any]],
    *,
    name: str,
    status: Callable[[dict[str, Any]], str],
    progress: bool = True,
    plot_key: str = "reward_mean",
    subject: str | None = None,
) -> None:
    """Steps from the resume point to `config.steps`: metrics, progress, checkpoints, final export, plot.

    reward.png draws `plot_key` (the mean episode reward by default; a reward model's chosen-minus-
    rejected margin) titled with the learner's `name` and `subject` (the task by default; an offline
    learner names its data).
    """
    from rich.console import Console  # noqa: PLC0415 - rich's progress is only needed by the loop
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    config = state.config
    out = Path(config.out)
    if state.resume_from is not None:
        state.step = load_checkpoint(
            state.resume_from, model=state.model, optimizer=state.optimizer, extra=state.extra_state
        )
    log = RunLog(out, resume_from=state.step if state.resume_from is not None else None)
    config_dict = dataclasses.asdict(config)
    console = Console(quiet=not progress)
    if getattr(config, "bf16", False) and not native_bf16(state.device):
        console.print(
            f"[yellow]warning: --bf16 on {state.device}, which has no native bf16 (CPU: AVX-512 BF16 or AMX); "
            "autocast is emulated and much slower than fp32 here: drop --bf16[/]"
        )
    columns = [
        TextColumn(f"[bold]{name}[/] step {{task.completed}}/{{task.total}}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    ]

    def checkpoint() -> None:
        saved = save_checkpoint(
            out,
            model=state.model,
            tokenizer=state.tokenizer,
            optimizer=state.optimizer,
            step=state.step,
            config=config_dict,
            extra=state.extra_state,
        )
        console.print(f"step {state.step}: resume checkpoint {saved.describe()}")

    with StopAtStepBoundary(console.print) as stop, Progress(*columns, console=console, disable=not progress) as bar:
        job = bar.add_task("train", total=config.steps, completed=state.step, status="")
        while state.step < config.steps and not stop.requested:
            metrics = step(state)
            log.log(metrics)
            bar.update(job, completed=state.step, status=status(metrics))
            if config.save_every and state.step % config.save_every == 0:
                checkpoint()
        if stop.requested and state.step < config.steps:
            state.interrupted = True
            if not (config.save_every and state.step % config.save_every == 0):
                checkpoint()
    if not state.interrupted and config.save_final:
        console.print(f"final export: {export_final(out, model=state.model, tokenizer=state.tokenizer).describe()}")
    log.plot(key=plot_key, title=f"{name} on {subject or config.task} ({config.model})")
    log.close()


def episode_status(metrics: Mapping[str, Any]) -> str:
    """The part of a progress line every learner shows: turns and tools of multi-turn runs, verifier errors."""
    text = ""
    if metrics["turns_mean"] > 1 or metrics["tool_calls_mean"]:
        text += f" turns {metrics['turns_mean']:.1f} tools {metrics['tool_calls_mean']:.1f}"
    if metrics["verifier_error_fraction"]:
        text += f" [red]verifier errors {metrics['verifier_error_fraction']:.0%}[/]"
    return text


class StopAtStepBoundary:
    """A context in which the first Ctrl-C (SIGINT) asks the loop to stop after its step; the second stops now.

    Outside the main thread (where signal handlers cannot be set) it does nothing.
    """

    def __init__(self, announce: Callable[[str], Any] = print) -> None:
        self.requested = False
        self._announce = announce
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._announce("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop now, unsaved)")

    def __enter__(self) -> StopAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
