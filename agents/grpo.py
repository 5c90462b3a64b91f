"""GRPO: group-relative policy optimisation over llmenv environments, in one readable file.

Each step plays `prompts_per_step` tasks `group_size` times (a `VectorLLMEnv` with groups),
turns rewards into group-relative advantages, and takes a clipped policy-gradient step on the
policy tokens only. Episodes whose verifier failed (`Verdict.error`) are left out of the loss and
of their group's baseline, and counted (`verifier_error_fraction`). The variants that papers argue
about are config choices, each resolved to one function once: advantage estimator (GRPO std /
Dr. GRPO none / batch / RLOO / REINFORCE++ per token, with or without a group baseline), loss
aggregation (token mean as DAPO, sequence mean as GRPO, constant normaliser as Dr. GRPO), token
or sequence (GSPO) importance ratios, clip-higher, dynamic sampling, KL to a reference model (off
by default, so no reference model is loaded). Log-probs are computed on completion positions only
(see agents/scoring.py). Reward shaping is the task's business (a `Rubric`), not the learner's.
`train(config)` is the loop behind `llmenv train grpo`; what every learner shares around it (device
checks, resume, Ctrl-C, checkpoints) is in agents/trainer.py and agents/checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmenv.agents import gc_control, losses
from llmenv.agents.checkpoint import export_final, load_checkpoint, save_checkpoint
from llmenv.agents.config import above, at_least, check_config, option
from llmenv.agents.policy import HFPolicy, SamplingParams
from llmenv.agents.rollout import RolloutBatch, rollout, to_batch
from llmenv.agents.runlog import RunLog
from llmenv.agents.scoring import completion_logprobs
from llmenv.agents.trainer import StopAtStepBoundary, adamw, own_weights, resolve_device, resume_point
from llmenv.models import load_model, load_tokenizer
from llmenv.vector import VectorLLMEnv

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

TRAIN_SEED_STRIDE = 10**8
"""A run with seed s draws its step-t tasks from env seeds s * 10**8 + t * num_envs + i."""


@dataclass
class GRPOConfig:
    """Everything a GRPO run needs; every field is a `llmenv train grpo` flag."""

    task: str = option("llmenv/arith-v0", "Registered task id (llmenv tasks lists them).")
    model: str = option("smollm2-135m", "Model to train: local path, hub id or smollm2-135m.")
    task_params: dict[str, Any] = option({}, "Task parameter passed to the environment")
    steps: int = option(20, "Optimisation steps (one rollout each).", **at_least(1))
    prompts_per_step: int = option(4, "Distinct tasks per step.", **at_least(1))
    group_size: int = option(
        4,
        "Completions per task; advantages are relative within a group.",
        check=lambda g: g >= 2,
        expects=">= 2: with one completion per task every advantage is 0 and nothing is learned",
    )
    max_new_tokens: int = option(64, "Generation budget per policy turn.", **at_least(1))
    temperature: float = option(1.0, "Sampling temperature of rollouts.", **above(0))
    top_p: float = option(1.0, "Nucleus sampling mass of rollouts.", check=lambda p: 0 < p <= 1, expects="in (0, 1]")
    lr: float = option(1e-6, "AdamW learning rate.", **above(0))
    weight_decay: float = option(0.0, "AdamW weight decay.", **at_least(0))
    seed: int = option(0, "Seeds model init order, rollouts and task draws.", **at_least(0))
    out: str = option("runs/grpo", "Folder for metrics.jsonl, reward.png, TensorBoard events and checkpoints.")
    resume: bool = option(False, "Continue from out/checkpoint (weights, optimizer, RNG, step).")
    save_every: int = option(
        10,
        "Write the resume checkpoint every this many steps (0: only on Ctrl-C).",
        **at_least(0),
    )
    save_final: bool = option(True, "Export the trained weights (or adapter) alone to out/final at the end.")
    epochs: int = option(
        1,
        "Optimisation passes over each rollout; >1 stores old log-probs with an extra forward pass.",
        **at_least(1),
    )
    micro_batch: int = option(8, "Sequences per forward/backward (gradient accumulation).", **at_least(1))
    advantage: str = option(
        "std",
        'Advantage: "std" (GRPO), "none" (Dr. GRPO), "batch" (batch-std), "rloo" (leave-one-out), "reinforce_pp" or'
        ' "reinforce_pp_baseline" (REINFORCE++ per token, whitened over the batch; with a group-mean baseline).',
        choices=losses.ADVANTAGES,
    )
    loss_aggregation: str = option(
        "token_mean",
        '"token_mean" (DAPO), "sequence_mean" (GRPO) or "constant" (Dr. GRPO: / max_new_tokens).',
        choices=losses.AGGREGATIONS,
    )
    importance: str = option(
        "token", '"token" (PPO/GRPO ratio per token) or "sequence" (GSPO).', choices=("token", "sequence")
    )
    clip_low: float = option(
        0.2, "Lower clip range of the ratio (1 - clip_low).", check=lambda c: 0 <= c < 1, expects="in [0, 1)"
    )
    clip_high: float = option(
        0.28,
        "Upper clip range (1 + clip_high); above clip_low is DAPO's clip-higher.",
        **at_least(0),
    )
    beta: float = option(
        0.0,
        "KL coefficient towards the initial model; 0 loads no reference model.",
        **at_least(0),
    )
    kl_estimator: str = option("k3", '"k1" or "k3" (Schulman) per-token KL estimator.', choices=("k1", "k3"))
    entropy_coef: float = option(0.0, "Entropy bonus coefficient.")
    dynamic_sampling: bool = option(False, "Drop groups whose rewards do not vary (DAPO); they carry no gradient.")
    drop_cut: bool = option(False, "Leave completions cut at max_new_tokens (no stop token) out of the loss.")
    max_grad_norm: float = option(1.0, "Gradient-norm clipping.", **above(0))
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
class TrainState:
    """What the loop carries between steps."""

    config: GRPOConfig
    model: Any
    tokenizer: Any
    policy: HFPolicy
    optimizer: torch.optim.Optimizer
    env: Any
    reference: Any | None
    advantage_fn: Callable[..., torch.Tensor]
    aggregate_fn: Callable[..., torch.Tensor]
    step: int = 0
    resume_from: Path | None = None
    """The checkpoint this run continues from (None for a fresh run)."""
    interrupted: bool = False
    """The run stopped early on Ctrl-C (after saving a checkpoint)."""


def build(config: GRPOConfig) -> TrainState:
    """Check the device and resume checkpoint, then load the env, model (LoRA), reference (beta > 0) and optimizer."""
    device = resolve_device(config.device)
    resume_from = resume_point(config.out, config.resume)  # before the model loads: a missing one fails in ms
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    env = VectorLLMEnv(
        config.task,
        config.prompts_per_step * config.group_size,
        tokenizer,
        group_size=config.group_size,
        autoreset=False,
        **config.task_params,
    )
    env.prestart()  # verifier workers boot while the model loads
    model: PreTrainedModel | PeftModel = load_model(config.model, device=device)
    reference = None
    if config.beta > 0:
        reference = load_model(config.model, device=device).eval().requires_grad_(False)
    if config.lora_rank > 0:
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - peft is optional (LoRA runs only)

        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules="all-linear")
        model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainable = [p for p in model.parameters() if p.requires_grad]
    own_weights(trainable, device)
    optimizer = adamw(trainable, lr=config.lr, weight_decay=config.weight_decay, device=device)
    aggregate = losses.AGGREGATIONS[config.loss_aggregation]
    if config.loss_aggregation == "constant":
        aggregate = _constant_aggregation(config.max_new_tokens)
    return TrainState(
        config=config,
        model=model,
        tokenizer=tokenizer,
        policy=HFPolicy(model, tokenizer),
        optimizer=optimizer,
        env=env,
        reference=reference,
        advantage_fn=losses.ADVANTAGES[config.advantage],
        aggregate_fn=aggregate,
        resume_from=resume_from,
    )


def _constant_aggregation(max_tokens: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def aggregate(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return losses.constant_normalizer(loss, mask, max_tokens=max_tokens)

    return aggregate


def policy_loss(
    state: TrainState, rows: RolloutBatch, advantages: torch.Tensor, old_logp: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective on some rows of a rollout (`old_logp` None = single on-policy pass)."""
    cfg, device = state.config, state.policy.device
    ids, attention = rows.input_ids.to(device), rows.attention_mask.to(device)  # (b, L)
    mask = rows.loss_mask.to(device)  # (b, L)
    logp, entropy = completion_logprobs(
        state.model, ids, attention, mask, with_entropy=True, entropy_grad=cfg.entropy_coef > 0, bf16=cfg.bf16
    )  # (b, L)
    old = logp.detach() if old_logp is None else old_logp.to(device)  # (b, L)
    adv = advantages.to(device)  # (b, L)
    if cfg.importance == "sequence":
        per_token, clipped = losses.gspo_surrogate(logp, old, adv, mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high)
    else:
        per_token, clipped = losses.clipped_surrogate(logp, old, adv, clip_low=cfg.clip_low, clip_high=cfg.clip_high)
    kl = torch.zeros_like(logp)  # (b, L)
    if state.reference is not None:
        with torch.no_grad():
            ref_logp, _ = completion_logprobs(state.reference, ids, attention, mask, bf16=cfg.bf16)  # (b, L)
        kl = losses.kl_penalty(logp, ref_logp, estimator=cfg.kl_estimator) * mask  # (b, L)
        per_token = per_token + cfg.beta * kl
    if cfg.entropy_coef:
        assert entropy is not None  # asked for with with_entropy=True
        per_token = per_token - cfg.entropy_coef * entropy
    loss = state.aggregate_fn(per_token, mask)
    stats = {
        "kl": float(losses.masked_mean(kl.detach(), mask)),
        "entropy": float(losses.masked_mean(entropy.detach(), mask)) if entropy is not None else 0.0,
        "clip_fraction": float(losses.masked_mean(clipped.float(), mask)),
    }
    return loss, stats


def update(state: TrainState, batch: RolloutBatch) -> dict[str, float]:
    """Advantages, filtering, then `epochs` passes of micro-batched gradient steps; returns metrics.

    Episodes whose verdict carries a verifier error are neither trained on nor counted in their
    group's advantage baseline: a crashed check is not a wrong answer.
    """
    cfg = state.config
    scored = ~batch.errored  # (B,)
    advantages = torch.zeros_like(batch.loss_mask, dtype=batch.rewards.dtype)  # (B, L): sequence-level ones fill a row
    if scored.any():
        rewards, groups, mask = batch.rewards[scored], batch.group_ids[scored], batch.loss_mask[scored]
        found = state.advantage_fn(rewards, groups, mask)  # (n,) sequence-level or (n, L) per token
        advantages[scored] = found.reshape(len(found), -1)  # (n, 1) broadcasts over L
    varying = _varying_groups(batch.rewards, batch.group_ids, scored)  # (B,)
    keep = scored.clone()  # (B,)
    if cfg.dynamic_sampling:
        keep &= varying
    if cfg.drop_cut:
        keep &= ~batch.cut
    rows = torch.nonzero(keep)[:, 0]
    groups = batch.group_ids[scored].unique()
    flat = [g for g in groups.tolist() if not varying[(batch.group_ids == g) & scored].any()]
    metrics = {
        "kept": float(keep.float().mean()),
        "zero_variance_group_fraction": len(flat) / max(len(groups), 1),
        "loss": 0.0,
        "kl": 0.0,
        "entropy": 0.0,
        "clip_fraction": 0.0,
        "grad_norm": 0.0,
    }
    if len(rows) == 0:
        return metrics
    chunks = [(chunk, _select(batch, chunk)) for chunk in rows.split(cfg.micro_batch)]
    old_logps: list[torch.Tensor | None] = [None] * len(chunks)
    if cfg.epochs > 1:  # later epochs are off-policy: keep the log-probs of the weights that sampled
        device = state.policy.device
        with torch.no_grad():
            old_logps = [
                completion_logprobs(
                    state.model,
                    sub.input_ids.to(device),
                    sub.attention_mask.to(device),
                    sub.loss_mask.to(device),
                    bf16=cfg.bf16,
                )[0]
                for _, sub in chunks
            ]
    state.model.train()
    for _ in range(cfg.epochs):
        state.optimizer.zero_grad(set_to_none=True)
        for (chunk, sub), old in zip(chunks, old_logps):
            loss, stats = policy_loss(state, sub, advantages[chunk, : sub.input_ids.shape[1]], old)
            (loss * len(chunk) / len(rows)).backward()
            metrics["loss"] += float(loss.detach()) * len(chunk) / len(rows) / cfg.epochs
            for key, value in stats.items():
                metrics[key] += value * len(chunk) / len(rows) / cfg.epochs
        trainable = [p for p in state.model.parameters() if p.requires_grad]
        metrics["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)) / cfg.epochs
        state.optimizer.step()
    state.model.eval()
    return metrics


def _varying_groups(rewards: torch.Tensor, group_ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """True for rows whose group's scored rewards are not all equal (a group with signal)."""
    keep = torch.zeros_like(rewards, dtype=torch.bool)  # (B,)
    for group in group_ids.unique():
        members = (group_ids == group) & scored  # (B,)
        if members.any():
            keep[members] = bool(rewards[members].max() > rewards[members].min())
    return keep


def _select(batch: RolloutBatch, rows: torch.Tensor) -> RolloutBatch:
    """The given rows of a batch, trimmed to their longest sequence."""
    width = int(batch.attention_mask[rows].sum(1).max())
    return dataclasses.replace(
        batch,
        input_ids=batch.input_ids[rows, :width],
        attention_mask=batch.attention_mask[rows, :width],
        loss_mask=batch.loss_mask[rows, :width],
        old_logprobs=batch.old_logprobs[rows, :width],
        rewards=batch.rewards[rows],
        group_ids=batch.group_ids[rows],
        cut=batch.cut[rows],
        errored=batch.errored[rows],
    )


def train(config: GRPOConfig, *, progress: bool = True) -> TrainState:
    """Run GRPO for `config.steps` steps, writing metrics, plot, checkpoints and the final export to `config.out`.

    Ctrl-C stops after the current step with a resume checkpoint saved (`state.interrupted`).
    """
    with gc_control.paused():  # loading allocates ~10^5 long-lived objects; collecting mid-load finds no garbage
        state = build(config)
    with gc_control.frozen():  # full collections in the loop skip the model, tokenizer and imported modules
        _loop(state, progress=progress)
    return state


def _status(metrics: dict[str, Any]) -> str:
    """The progress line's text for one step, with a warning when the step carried no learning signal."""
    text = f"reward {metrics['reward_mean']:.3f} loss {metrics['loss']:+.4f} {metrics['step_time_s']:.1f}s"
    if metrics["turns_mean"] > 1 or metrics["tool_calls_mean"]:
        text += f" turns {metrics['turns_mean']:.1f} tools {metrics['tool_calls_mean']:.1f}"
    if metrics["verifier_error_fraction"]:
        text += f" [red]verifier errors {metrics['verifier_error_fraction']:.0%}[/]"
    if metrics["zero_variance_group_fraction"] >= 1.0 or metrics["kept"] == 0.0:
        text += " [yellow]no learning signal: every group's rewards are equal[/]"
    return text


def _loop(state: TrainState, *, progress: bool) -> None:
    """Steps from the resume point to `config.steps`: metrics, progress, checkpoints, final export, plot."""
    from rich.console import Console  # noqa: PLC0415 - rich's progress is only needed by the loop
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    config = state.config
    out = Path(config.out)
    if state.resume_from is not None:
        state.step = load_checkpoint(state.resume_from, model=state.model, optimizer=state.optimizer)
    log = RunLog(out, resume_from=state.step if state.resume_from is not None else None)
    config_dict = dataclasses.asdict(config)
    console = Console(quiet=not progress)
    columns = [
        TextColumn("[bold]GRPO[/] step {task.completed}/{task.total}"),
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
        )
        console.print(f"step {state.step}: resume checkpoint {saved.describe()}")

    with StopAtStepBoundary(console.print) as stop, Progress(*columns, console=console, disable=not progress) as bar:
        job = bar.add_task("train", total=config.steps, completed=state.step, status="")
        while state.step < config.steps and not stop.requested:
            metrics = train_step(state)
            log.log(metrics)
            bar.update(job, completed=state.step, status=_status(metrics))
            if config.save_every and state.step % config.save_every == 0:
                checkpoint()
        if stop.requested and state.step < config.steps:
            state.interrupted = True
            if not (config.save_every and state.step % config.save_every == 0):
                checkpoint()
    if not state.interrupted and config.save_final:
        console.print(f"final export: {export_final(out, model=state.model, tokenizer=state.tokenizer).describe()}")
    log.plot(title=f"GRPO on {config.task} ({config.model})")
    log.close()


def train_step(state: TrainState) -> dict[str, Any]:
    """One rollout and one update; advances `state.step` and returns the step's metrics."""
    cfg = state.config
    started = time.perf_counter()
    sampling = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed * 1_000_003 + state.step,
    )
    env_seed = cfg.seed * TRAIN_SEED_STRIDE + state.step * state.env.num_envs  # far below EVAL_SEED_OFFSET
    episodes = rollout(state.env, state.policy, sampling, seed=env_seed)
    batch = to_batch(episodes, pad_token_id=state.policy.pad_token_id)
    generated = time.perf_counter()
    metrics = update(state, batch)
    finished = time.perf_counter()
    state.step += 1
    policy_tokens = int(batch.loss_mask.sum())
    return {
        "step": state.step,
        "reward_mean": float(batch.rewards.mean()),
        "reward_std": float(batch.rewards.std(unbiased=False)),
        **metrics,
        "verifier_error_fraction": float(batch.errored.float().mean()),
        **batch.stats,
        "tokens": policy_tokens,
        "cut_fraction": float(batch.cut.float().mean()),
        "generation_tokens_per_s": policy_tokens / max(generated - started, 1e-9),
        "update_tokens_per_s": policy_tokens * cfg.epochs / max(finished - generated, 1e-9),
        "step_time_s": finished - started,
        **{f"parts/{name}": value for name, value in batch.parts.items()},
    }
