"""Side by side: a whole PPO run of llmenv (`llmenv train ppo`) and of TRL 1.12.0's `PPOTrainer`.

Run: python benchmarks/ppo_vs_trl.py [--steps 3] [--rounds 3] [--order ours,trl]
(in a venv holding llmenv and trl 1.12.0, the last TRL release with PPOTrainer, under
`trl.experimental.ppo`; benchmarks/RESULTS_ppo.md has the commands).

The same job for both, each in its own fresh Python process started by this script (so the wall
time covers interpreter start, imports, model loads, the steps and teardown), one after the other,
the order reversed every other round; ratios compare medians over the rounds:

- models: the embedded SmolLM2-135M-Instruct folder (`llmenv.models.resolve_model_dir`), fp32, CPU,
  loaded three times on each side: the policy, a SEPARATE critic initialised from the same weights
  (llmenv `--critic separate`: the decoder stack plus a fresh value head; TRL: an
  `AutoModelForSequenceClassification(num_labels=1)`, the same stack plus a fresh `score` head) and a
  frozen reference policy for the KL;
- per step 4 prompts x 1 completion, at most 32 new tokens, temperature 1.0, top-p 1.0 (TRL also
  top_k=0), stopping at EOS (TRL `stop_token="eos"`);
- prompts: the arith-v0 tasks llmenv's trainer draws for steps 0..n-1 (env i of step t gets seed
  `seed * TRAIN_SEED_STRIDE + t * 4 + i`); TRL gets exactly those prompt token ids (the env's
  observations, which are SmolLM2's chat template with the generation prompt), in the same order
  (its shuffling DataLoader is replaced by an unshuffled one, left padding);
- PPO: 4 epochs x 1 minibatch of the 4 rows per step (TRL `num_ppo_epochs=4`, `num_mini_batches=1`,
  micro batch 4), clip 0.2 both ways, value clip 0.2, vf_coef 0.1, gamma 1, lambda 0.95, advantages
  whitened over the batch's policy tokens, KL as a per-token k1 penalty `-0.05 * (logp - ref_logp)` in
  the reward (TRL `kl_estimator="k1"`, `kl_coef=0.05`; llmenv `--kl-in reward --kl-estimator k1`);
- optimisers: AdamW lr 1e-6, weight decay 0, constant. llmenv has one AdamW for the policy and one for
  the critic (`--critic-lr 1e-6`), both torch's fused kernel; TRL has one AdamW over policy + value
  model together (`optim` left at TRL's default, adamw_torch_fused, `lr_scheduler_type="constant"`).
  Neither side clips gradients: TRL's PPO loop never does, llmenv runs with `--max-grad-norm 0`;
- reward: llmenv's `MathVerifier` on the completion text (special tokens dropped) against the task's
  answer. llmenv calls it through the env. TRL's PPOTrainer only takes a reward *model* and scores
  with `trl.experimental.utils.get_reward(reward_model, query_responses, pad_token_id,
  context_length)`, which `ppo_trainer.py` imports into its own namespace; this script passes a
  parameter-free placeholder module as `reward_model` and replaces `ppo_trainer.get_reward` with a
  function that, for that placeholder only, decodes each EOS-truncated response, looks its prompt up
  and returns `MathVerifier()(text, Task(prompt="", answer=answer)).reward` as the score (the value
  model still goes through TRL's own `get_reward`), so TRL adds the verifier's reward exactly where it
  would add a reward model's score;
- no saving (TRL `save_strategy="no"`; llmenv `--save-every 1000 --no-save-final`), no gradient
  checkpointing, no bf16, logs in memory only (TRL `report_to="none"`, `logging_steps=1`).

SmolLM2's tokenizer pads with its EOS token `<|im_end|>`, which also ends every chat turn inside the
prompt; TRL's PPO masks every pad-token position as padding (`query_responses != pad_token_id`), so
TRL's side pads with `<|endoftext|>` (id 0, absent from these prompts) instead, on the tokenizer and
the policy's generation config.

Inside each process the steps are timed too: llmenv's step (through `trainer.train`'s step function:
rollout = env reset + generate + env step/verify, then the update = policy, critic and reference
scoring + GAE + the epochs), TRL's from the end of the previous step (or `on_train_begin`) to
`on_step_end`. The generation phase is llmenv's rollout and TRL's `batch_generation` plus the
verifier's scoring; the update phase is the rest of the step. Generation tokens/s = policy
(completion) tokens, EOS included, / generation time; update tokens/s = the same tokens / update time
(not multiplied by the epochs). Peak RSS is each worker process's `ru_maxrss` as `os.wait4` returns it
(the `resource.getrusage(RUSAGE_CHILDREN)` figure of that one child).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this folder holds math_verify.py, which would shadow the math_verify package llmenv imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

PROCESS_ENV = {
    "HF_HUB_OFFLINE": "1",  # the Hub is unreachable here; never wait on it
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore",
    "WANDB_DISABLED": "true",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


# -- the job both sides run ------------------------------------------------------------------------


def job_spec(args: argparse.Namespace) -> dict:
    """Model folder, hyper-parameters and the exact tasks of every step (drawn as llmenv's trainer does)."""
    import llmenv
    from llmenv.agents.trainer import TRAIN_SEED_STRIDE
    from llmenv.models import load_tokenizer, resolve_model_dir

    model_dir = str(resolve_model_dir(args.model))
    tok = load_tokenizer(model_dir)
    env = llmenv.make("llmenv/arith-v0", tokenizer=tok)
    tasks = []
    for step in range(args.steps):
        for i in range(args.prompts):  # VectorLLMEnv with group size 1: env i gets seed + i
            obs, info = env.reset(seed=args.seed * TRAIN_SEED_STRIDE + step * args.prompts + i)
            tasks.append({"prompt": info["task"].prompt, "answer": info["task"].answer, "prompt_ids": obs.tolist()})
    return {
        "model_dir": model_dir,
        "steps": args.steps,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "lr": args.lr,
        "seed": args.seed,
        "epochs": args.epochs,
        "minibatches": args.minibatches,
        "kl_coef": args.kl_coef,
        "tasks": tasks,
    }


def rss_mb() -> float:
    """This process's own peak resident set so far, MB (ru_maxrss is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- worker: llmenv --------------------------------------------------------------------------------


def worker_ours(spec: dict, result_path: str, entered: float) -> None:
    """Run `llmenv train ppo ...` exactly as the console script does (`llmenv.cli.entry`), timing its parts."""
    import atexit
    import shutil

    import torch

    import llmenv  # noqa: F401  (registers the tasks)
    from llmenv import cli
    from llmenv.agents import trainer
    from llmenv.agents.runlog import RunLog

    imported = time.time()
    timings: dict[str, float] = {}
    steps: list[dict] = []
    prompts_seen: list[str] = []
    marks: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    # ppo.train calls trainer.train(config, build, train_step, ...): wrap the build and the step it gets
    original_rollout, original_train = trainer.rollout, trainer.train

    def rollout(*a, **k):
        episodes = original_rollout(*a, **k)
        prompts_seen.extend(e.task.prompt for e in episodes)
        return episodes

    def train(config, build, step, **kwargs):
        def timed_step(state):
            t0 = time.time()
            metrics = step(state)
            steps.append({"start": t0, "end": time.time(), "wall_s": time.time() - t0})
            return metrics

        marks["train_start"] = time.time()
        state = original_train(config, timed("build_s", build), timed_step, **kwargs)
        marks["train_end"] = time.time()
        marks["critic"] = type(state.critic).__name__
        marks["reference"] = state.reference is not None
        return state

    trainer.rollout, trainer.train = rollout, train
    trainer.save_checkpoint = timed("final_checkpoint_s", trainer.save_checkpoint)
    RunLog.plot = timed("plot_s", RunLog.plot)
    out = tempfile.mkdtemp(prefix="ppo-bench-ours-")
    flags = {
        "task": "llmenv/arith-v0",
        "model": spec["model_dir"],
        "steps": spec["steps"],
        "prompts-per-step": spec["prompts"],
        "group-size": 1,
        "max-new-tokens": spec["max_new_tokens"],
        "temperature": 1.0,
        "top-p": 1.0,
        "lr": spec["lr"],
        "critic": "separate",
        "critic-lr": spec["lr"],
        "epochs": spec["epochs"],
        "minibatches": spec["minibatches"],
        "clip-low": 0.2,
        "clip-high": 0.2,
        "value-clip": 0.2,
        "max-grad-norm": 0,  # TRL's PPO loop clips no gradient
        "gamma": 1.0,
        "lam": 0.95,
        "kl-coef": spec["kl_coef"],
        "kl-estimator": "k1",
        "kl-in": "reward",
        "seed": spec["seed"],
        "out": out,
        "save-every": 1000,
        "device": "cpu",
    }
    argv = ["train", "ppo"]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    argv += ["--no-save-final"]

    def write_result() -> None:  # at exit, after the command returned, as the console script would exit
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
        shutil.rmtree(out, ignore_errors=True)
        for step, row in zip(steps, rows):
            tokens = row["tokens"]
            gen_s = tokens / row["generation_tokens_per_s"]
            update_s = row["step_time_s"] - gen_s
            step.update(
                tokens=tokens,
                step_time_s=row["step_time_s"],
                generation_s=gen_s,
                update_s=update_s,
                generation_tokens_per_s=row["generation_tokens_per_s"],
                update_tokens_per_s=tokens / update_s,
                reward_mean=row["reward_mean"],
                policy_loss=row.get("policy_loss"),
                value_loss=row.get("value_loss"),
                kl=row.get("kl"),
                optimizer_steps=row.get("optimizer_steps"),
                cut_fraction=row["cut_fraction"],
            )
        result = {
            "entered": entered,
            "imported": imported,
            "train_start": marks.get("train_start"),
            "train_end": marks.get("train_end"),
            "steps": steps,
            "timings": timings,
            "prompts_seen": prompts_seen,
            "threads": torch.get_num_threads(),
            "self_peak_rss_mb": rss_mb(),
            "setup": f"critic {marks.get('critic')}, reference {marks.get('reference')}",
            "argv": argv,
        }
        Path(result_path).write_text(json.dumps(result))

    atexit.register(write_result)
    cli.entry(argv)


# -- worker: TRL -----------------------------------------------------------------------------------


def worker_trl(spec: dict, result_path: str, entered: float) -> None:
    """TRL 1.12.0's PPOTrainer on the same prompts, with the verifier's reward in place of a reward model."""
    import datasets
    import torch
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer
    from trl.experimental.utils import get_reward as trl_get_reward

    from llmenv.types import Task
    from llmenv.verifiers.math import MathVerifier

    imported = time.time()
    verifier = MathVerifier()
    answers = {tuple(t["prompt_ids"]): t["answer"] for t in spec["tasks"]}
    generation: list[float] = []  # seconds in batch_generation, per step
    scoring: list[float] = []  # seconds in the verifier, per step
    rewards: list[list[float]] = []
    prompts_seen: list[list[int]] = []
    tokens: list[int] = []
    cut: list[int] = []
    marks: list[float] = []

    class VerifierReward(torch.nn.Module):
        """Stands where PPOTrainer wants a reward model; `get_reward` below scores its calls with the verifier."""

    reward_placeholder = VerifierReward()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], padding_side="left")
    tokenizer.pad_token = "<|endoftext|>"  # not the EOS, which the chat template puts inside every prompt
    pad_id = tokenizer.pad_token_id

    def get_reward(model, query_responses, pad_token_id, context_length):
        if model is not reward_placeholder:
            return trl_get_reward(model, query_responses, pad_token_id, context_length)  # the value model
        t0 = time.perf_counter()
        scores = []
        for row in query_responses.tolist():
            prompt = tuple(i for i in row[:context_length] if i != pad_token_id)
            response = [i for i in row[context_length:] if i != pad_token_id]
            prompts_seen.append(list(prompt))
            tokens.append(len(response))
            cut.append(int(tokenizer.eos_token_id not in response))
            text = tokenizer.decode(response, skip_special_tokens=True)
            scores.append(float(verifier(text, Task(prompt="", answer=answers[prompt])).reward))
        rewards.append(scores)
        scoring.append(time.perf_counter() - t0)
        score = torch.tensor(scores, dtype=torch.float32, device=query_responses.device)
        return None, score, None  # PPOTrainer reads only the score (the second item)

    original_generation = ppo_trainer.batch_generation

    def batch_generation(*a, **k):
        t0 = time.perf_counter()
        out = original_generation(*a, **k)
        generation.append(time.perf_counter() - t0)
        return out

    ppo_trainer.get_reward, ppo_trainer.batch_generation = get_reward, batch_generation

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.time())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.time())

    dataset = datasets.Dataset.from_list([{"input_ids": t["prompt_ids"]} for t in spec["tasks"]])
    batch = spec["prompts"]
    with tempfile.TemporaryDirectory(prefix="ppo-bench-trl-") as out:
        args = PPOConfig(
            output_dir=out,
            total_episodes=len(spec["tasks"]),  # steps x prompts: one rollout batch per step
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            num_mini_batches=spec["minibatches"],
            num_ppo_epochs=spec["epochs"],
            local_rollout_forward_batch_size=batch,
            response_length=spec["max_new_tokens"],
            stop_token="eos",
            temperature=1.0,
            missing_eos_penalty=None,
            kl_coef=spec["kl_coef"],
            kl_estimator="k1",
            cliprange=0.2,
            cliprange_value=0.2,
            vf_coef=0.1,
            gamma=1.0,
            lam=0.95,
            whiten_rewards=False,
            learning_rate=spec["lr"],
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            num_sample_generations=0,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,  # TRL's default is True; llmenv's (used here) is off
            use_cpu=True,
            seed=spec["seed"],
            logging_steps=1,  # in-memory log_history only
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        t_build = time.time()
        load = {"dtype": torch.float32}
        policy = AutoModelForCausalLM.from_pretrained(spec["model_dir"], **load)
        policy.generation_config.pad_token_id = pad_id
        reference = AutoModelForCausalLM.from_pretrained(spec["model_dir"], **load)
        value = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1, **load)
        value.config.pad_token_id = pad_id
        collator = DataCollatorWithPadding(tokenizer)
        trainer = PPOTrainer(
            args=args,
            processing_class=tokenizer,
            model=policy,
            ref_model=reference,
            reward_model=reward_placeholder,
            value_model=value,
            train_dataset=dataset,
            data_collator=collator,
            callbacks=[StepTimer()],
        )
        # PPOTrainer's own DataLoader shuffles; the job's prompts come in llmenv's order
        trainer.dataloader = trainer.accelerator.prepare(
            DataLoader(dataset, batch_size=batch, shuffle=False, collate_fn=collator, drop_last=True)
        )
        built = time.time()
        trainer.train()
        trained = time.time()
        history = [h for h in trainer.state.log_history if "objective/scores" in h]
        dtype = str(next(trainer.model.parameters()).dtype)
        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
        optimizer, fused = type(inner), bool(inner.defaults.get("fused"))
        gc_on = bool(getattr(policy, "is_gradient_checkpointing", False))
    steps = []
    for k in range(len(marks) - 1):
        wall = marks[k + 1] - marks[k]
        gen_s = generation[k] + scoring[k]
        step_tokens = sum(tokens[k * batch : (k + 1) * batch])
        steps.append(
            {
                "start": marks[k],
                "end": marks[k + 1],
                "wall_s": wall,
                "step_time_s": wall,
                "tokens": step_tokens,
                "generation_s": gen_s,
                "update_s": wall - gen_s,
                "generation_tokens_per_s": step_tokens / gen_s,
                "update_tokens_per_s": step_tokens / (wall - gen_s),
                "cut_fraction": sum(cut[k * batch : (k + 1) * batch]) / batch,
                "reward_mean": statistics.mean(rewards[k]),
                "verifier_s": scoring[k],
            }
        )
    for step, h in zip(steps, history):
        step.update(policy_loss=h.get("loss/policy_avg"), value_loss=h.get("loss/value_avg"), kl=h.get("objective/kl"))
    result = {
        "entered": entered,
        "imported": imported,
        "train_start": built,
        "train_end": trained,
        "steps": steps,
        "timings": {"build_s": built - t_build},
        "prompts_seen": prompts_seen,
        "threads": torch.get_num_threads(),
        "self_peak_rss_mb": rss_mb(),
        "setup": (
            f"model dtype {dtype}, gradient checkpointing {gc_on}, optimizer {optimizer.__name__} "
            f"(fused {fused}) over policy + value, lr scheduler {args.lr_scheduler_type}"
        ),
    }
    Path(result_path).write_text(json.dumps(result))


# -- parent ----------------------------------------------------------------------------------------


def run_worker(which: str, spec_path: str, workdir: str, tag: str, rnd: int) -> dict:
    """One worker process; its wall time and its own peak RSS (os.wait4's rusage of that child)."""
    result_path = os.path.join(workdir, f"{tag}.json")
    log_path = os.path.join(workdir, f"{tag}.log")
    env = {**os.environ, **PROCESS_ENV}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", which, "--spec", spec_path, "--result", result_path]
    load_before = os.getloadavg()[0]
    started = time.time()
    with open(log_path, "w") as log:
        child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = rc = os.waitstatus_to_exitcode(status)
    ended = time.time()
    if rc != 0 or not os.path.exists(result_path):
        tail = Path(log_path).read_text()[-4000:]
        return {"which": which, "round": rnd, "error": f"exit {rc}", "log_tail": tail, "wall_s": ended - started}
    result = json.loads(Path(result_path).read_text())
    result.update(
        which=which,
        round=rnd,
        started=started,
        ended=ended,
        wall_s=ended - started,
        peak_rss_mb=usage.ru_maxrss / 1024,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    return result


def summarise(r: dict) -> dict:
    steps = r["steps"]
    wall = [s["step_time_s"] for s in steps]
    tokens = sum(s["tokens"] for s in steps)
    gen = sum(s["generation_s"] for s in steps)
    upd = sum(s["update_s"] for s in steps)
    return {
        "wall_s": r["wall_s"],
        "startup_imports_s": r["imported"] - r["started"],
        "build_s": r["timings"].get("build_s", 0.0),
        "loop_s": steps[-1]["end"] - steps[0]["start"],
        "after_loop_s": r["ended"] - steps[-1]["end"],
        "step_mean_s": statistics.mean(wall),
        "gen_s": gen,
        "upd_s": upd,
        "tokens": tokens,
        "gen_tps": tokens / gen,
        "upd_tps": tokens / upd,
        "peak_rss_mb": r["peak_rss_mb"],
    }


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("llmenv", "trl", "torch", "transformers", "accelerate", "datasets", "tokenizers", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_report(spec: dict, results: list[dict]) -> None:
    ok = [r for r in results if "error" not in r]
    for r in results:
        if "error" in r:
            print(f"\n!! {r['which']} failed ({r['error']}, after {r['wall_s']:.1f}s); log tail:\n{r['log_tail']}")
    if not ok:
        return
    names = {"ours": "llmenv", "trl": "TRL"}
    rounds = max(r["round"] for r in results)

    def name(r: dict) -> str:
        return names[r["which"]] + (f" #{r['round']}" if rounds > 1 else "")

    print("\n### per step (inside each process)\n")
    print(
        "| run | step | step s | generation s | update s | completion tokens | cut | gen tok/s | update tok/s "
        "| reward | policy loss | value loss | kl |"
    )
    print(
        "|-----|------|--------|--------------|----------|-------------------|-----|-----------|--------------|"
        "--------|-------------|------------|----|"
    )
    for r in ok:
        for k, s in enumerate(r["steps"]):
            print(
                f"| {name(r)} | {k + 1} | {s['step_time_s']:.2f} | "
                f"{s['generation_s']:.2f} | {s['update_s']:.2f} | {s['tokens']} | {s['cut_fraction']:.2f} | "
                f"{s['generation_tokens_per_s']:.0f} | {s['update_tokens_per_s']:.0f} | "
                f"{_num(s.get('reward_mean'), '.2f')} | {_num(s.get('policy_loss'), '+.4f')} | "
                f"{_num(s.get('value_loss'), '.4f')} | {_num(s.get('kl'), '+.4f')} |"
            )
    print("\n### whole process and per step\n")
    header = (
        "| run | process wall s | python start + imports s | model load/build s | 3-step loop s | after loop s "
        "| mean step s | gen tok/s | update tok/s | peak RSS MB |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    sums: dict[str, list[dict]] = {"ours": [], "trl": []}
    for r in ok:
        s = summarise(r)
        sums[r["which"]].append(s)
        print(
            f"| {name(r)} | {s['wall_s']:.1f} | {s['startup_imports_s']:.1f} | {s['build_s']:.1f} | "
            f"{s['loop_s']:.1f} | {s['after_loop_s']:.1f} | {s['step_mean_s']:.2f} | {s['gen_tps']:.0f} | "
            f"{s['upd_tps']:.0f} | {s['peak_rss_mb']:.0f} |"
        )
    if sums["ours"] and sums["trl"]:

        def med(which: str, key: str) -> float:
            return statistics.median(s[key] for s in sums[which])

        print("\n### medians and ratio TRL / llmenv (>1 = llmenv faster or smaller)\n")
        print("| | TRL | llmenv | TRL / llmenv |")
        print("|---|---|---|---|")
        for label, key, unit in (
            ("whole process", "wall_s", "s"),
            ("3-step loop (first step start to last step end)", "loop_s", "s"),
            ("mean step", "step_mean_s", "s"),
            ("generation phase (sum over steps)", "gen_s", "s"),
            ("update phase (sum over steps)", "upd_s", "s"),
            ("peak RSS", "peak_rss_mb", "MB"),
        ):
            trl, ours = med("trl", key), med("ours", key)
            print(f"| {label} | {trl:.2f} {unit} | {ours:.2f} {unit} | {trl / ours:.2f}x |")
    for which in ("trl", "ours"):
        runs = [r for r in ok if r["which"] == which]
        if runs:
            print(f"{names[which]}: {runs[0]['setup']}, torch threads {runs[0]['threads']}")
    ours = [r for r in ok if r["which"] == "ours"]
    if ours:
        same = ours[0]["prompts_seen"] == [t["prompt"] for t in spec["tasks"]]
        print(f"llmenv prompts drawn == the job's: {same}")
        print("llmenv timings: " + ", ".join(f"{k} {v:.2f}" for k, v in ours[0]["timings"].items()))
    trl = [r for r in ok if r["which"] == "trl"]
    if trl:
        same = trl[0]["prompts_seen"] == [t["prompt_ids"] for t in spec["tasks"]]
        print(f"TRL prompts scored == the job's: {same}")
    print(
        "load average (1 min) before/after each run: "
        + ", ".join(f"{name(r)} {r['load_before']:.2f}/{r['load_after']:.2f}" for r in ok)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (1 completion each)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-6, help="policy and critic learning rate")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--minibatches", type=int, default=1)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", default="ours,trl", help="which processes run, in order (ours,trl)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat this many times, reversing the order every other round (ratios use medians)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch/OpenMP threads in both processes (0 = torch's default)"
    )
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        entered = time.time()
        spec = json.loads(Path(args.spec).read_text())
        (worker_ours if args.worker == "ours" else worker_trl)(spec, args.result, entered)
        return

    if args.threads:
        PROCESS_ENV["OMP_NUM_THREADS"] = PROCESS_ENV["MKL_NUM_THREADS"] = str(args.threads)
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)
    spec = job_spec(args)
    print(f"model: {spec['model_dir']} (fp32, CPU; policy, separate critic and reference on both sides)")
    print(
        f"job: {args.steps} steps x {args.prompts} prompts x 1 completion, <= {args.max_new_tokens} new tokens, "
        f"temperature 1.0, PPO {args.epochs} epochs x {args.minibatches} minibatch, clip 0.2, value clip 0.2, "
        f"gamma 1, lambda 0.95, k1 KL {args.kl_coef} in the reward, AdamW lr {args.lr}, seed {args.seed}"
    )
    for i, t in enumerate(spec["tasks"]):
        print(f"  prompt {i + 1}: {t['prompt']!r} -> {t['answer']} ({len(t['prompt_ids'])} prompt tokens)")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    order = [w.strip() for w in args.order.split(",") if w.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as workdir:
        spec_path = os.path.join(workdir, "spec.json")
        Path(spec_path).write_text(json.dumps(spec))
        for rnd in range(args.rounds):
            for which in order if rnd % 2 == 0 else order[::-1]:
                print(f"running {which} (round {rnd + 1}/{args.rounds}) ...", flush=True)
                r = run_worker(which, spec_path, workdir, f"{which}-{rnd}", rnd + 1)
                results.append(r)
                print(
                    f"  {which}: {r['wall_s']:.1f} s whole process"
                    + (f", peak RSS {r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "")
                    + (f"  FAILED {r['error']}" if "error" in r else ""),
                    flush=True,
                )
    print_report(spec, results)


if __name__ == "__main__":
    main()
