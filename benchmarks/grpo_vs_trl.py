"""Side by side: a whole GRPO run of llmenv (`llmenv.agents.grpo.train`) and of TRL's `GRPOTrainer`.

Run: python benchmarks/grpo_vs_trl.py [--steps 3] [--rounds 1] [--order ours,trl]
(in a venv holding llmenv and trl 1.16; benchmarks/RESULTS_grpo.md has the commands).

The same job for both, each in its own fresh Python process started by this script (so the wall
time covers interpreter start, imports, model load, the steps and teardown), one after the other:

- model: the embedded SmolLM2-135M-Instruct folder (`llmenv.models.resolve_model_dir`), fp32, CPU;
- per step 1 prompt x 4 generations, at most 32 new tokens, temperature 1.0, top-p 1.0;
- prompts: the arith-v0 tasks llmenv's trainer draws for steps 0..n-1 (env seed
  `seed * 10**8 + step * 4`); TRL gets the same prompts, in the same order, as a conversational
  dataset (`[{"role": "user", "content": prompt}]`, rendered by the tokenizer's chat template);
- reward: llmenv's `MathVerifier` on the completion text against the task's answer (llmenv calls it
  through the env; TRL through a reward function);
- loss: DAPO token-mean aggregation with clip-higher, selected in both: TRL `loss_type="dapo"`,
  `epsilon=0.2`, `epsilon_high=0.28`, `scale_rewards="group"`; llmenv `loss_aggregation="token_mean"`,
  `clip_low=0.2`, `clip_high=0.28`, `advantage="std"`; token-level ratios, one pass per batch
  (`num_iterations=1` / `epochs=1`), beta=0 (no reference model), AdamW lr 1e-6 constant,
  weight decay 0, grad-norm clip 1.0, no gradient checkpointing, no bf16, no vLLM, no saving
  (TRL `save_strategy="no"`; llmenv `save_every` > steps and `save_final=False`; a checkpoint, if
  one were written, would be timed and reported separately).

Inside each process the steps are timed too: llmenv's `train_step` (rollout = env reset + generate +
env step/verify, then update), TRL's optimizer step from `on_step_begin` to `on_step_end`
(`_generate_and_score_completions` = tokenize + generate + decode + reward + advantages, then
loss/backward/clip/optimizer). Generation tokens/s = policy (completion) tokens / generation-phase
time; update tokens/s = the same tokens / (step time - generation-phase time). For llmenv these are
the `generation_tokens_per_s` / `update_tokens_per_s` of its metrics.jsonl.
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
    num_envs = args.prompts * args.generations
    tasks = []
    for step in range(args.steps):
        for group in range(args.prompts):  # VectorLLMEnv: env i gets seed + i, group g plays env g*G's task
            obs, info = env.reset(seed=args.seed * TRAIN_SEED_STRIDE + step * num_envs + group * args.generations)
            tasks.append({"prompt": info["task"].prompt, "answer": info["task"].answer, "prompt_tokens": len(obs)})
    return {
        "model_dir": model_dir,
        "steps": args.steps,
        "prompts": args.prompts,
        "generations": args.generations,
        "max_new_tokens": args.max_new_tokens,
        "lr": args.lr,
        "seed": args.seed,
        "tasks": tasks,
    }


# -- worker: llmenv --------------------------------------------------------------------------------


def worker_ours(spec: dict, result_path: str, entered: float) -> None:
    """Run `llmenv train grpo ...` exactly as the console script does (`llmenv.cli.entry`), timing its parts."""
    import atexit
    import shutil

    import torch

    import llmenv  # noqa: F401  (registers the tasks)
    from llmenv import cli
    from llmenv.agents import grpo, trainer
    from llmenv.agents.runlog import RunLog

    imported = time.time()
    timings: dict[str, float] = {}
    steps: list[dict] = []
    prompts_seen: list[str] = []

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    grpo.build = timed("build_s", grpo.build)  # tokenizer + model load + optimizer + env
    trainer.save_checkpoint = timed("final_checkpoint_s", trainer.save_checkpoint)
    RunLog.__init__ = timed("runlog_init_s", RunLog.__init__)
    RunLog.plot = timed("plot_s", RunLog.plot)
    original_rollout, original_step, original_train = trainer.rollout, grpo.train_step, grpo.train
    marks: dict[str, float] = {}

    def rollout(*a, **k):
        episodes = original_rollout(*a, **k)
        prompts_seen.extend(dict.fromkeys(e.task.prompt for e in episodes))
        return episodes

    def train_step(state):
        t0 = time.time()
        metrics = original_step(state)
        steps.append({"start": t0, "end": time.time(), "wall_s": time.time() - t0})
        return metrics

    def train(*a, **k):
        marks["train_start"] = time.time()
        state = original_train(*a, **k)
        marks["train_end"] = time.time()
        return state

    trainer.rollout, grpo.train_step, grpo.train = rollout, train_step, train
    out = tempfile.mkdtemp(prefix="grpo-bench-ours-")
    flags = {
        "task": "llmenv/arith-v0",
        "model": spec["model_dir"],
        "steps": spec["steps"],
        "prompts-per-step": spec["prompts"],
        "group-size": spec["generations"],
        "max-new-tokens": spec["max_new_tokens"],
        "temperature": 1.0,
        "top-p": 1.0,
        "lr": spec["lr"],
        "weight-decay": 0.0,
        "seed": spec["seed"],
        "out": out,
        "save-every": 1000,
        "epochs": 1,
        "micro-batch": 8,
        "advantage": "std",
        "loss-aggregation": "token_mean",
        "importance": "token",
        "clip-low": 0.2,
        "clip-high": 0.28,
        "beta": 0.0,
        "max-grad-norm": 1.0,
        "device": "cpu",
    }
    argv = ["train", "grpo", *[f"--{k}={v}" for k, v in flags.items()]]
    argv += ["--no-save-final", "--no-gradient-checkpointing", "--no-bf16"]

    def write_result() -> None:  # at exit, after the command returned, as the console script would exit
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
        shutil.rmtree(out, ignore_errors=True)
        for step, row in zip(steps, rows):
            tokens = row["tokens"]
            gen_s = tokens / row["generation_tokens_per_s"]
            step.update(
                tokens=tokens,
                step_time_s=row["step_time_s"],
                generation_s=gen_s,
                update_s=row["step_time_s"] - gen_s,
                generation_tokens_per_s=row["generation_tokens_per_s"],
                update_tokens_per_s=row["update_tokens_per_s"],
                reward_mean=row["reward_mean"],
                loss=row["loss"],
                cut_fraction=row["cut_fraction"],
            )
        result = {
            "entered": entered,
            "imported": imported,
            "train_start": marks["train_start"],
            "train_end": marks["train_end"],
            "steps": steps,
            "timings": timings,
            "prompts_seen": prompts_seen,
            "threads": torch.get_num_threads(),
            "loss": "token_mean (DAPO) + advantage=std + clip 0.2/0.28, token ratios",
            "argv": argv,
        }
        Path(result_path).write_text(json.dumps(result))

    atexit.register(write_result)
    cli.entry(argv)


# -- worker: TRL -----------------------------------------------------------------------------------


def worker_trl(spec: dict, result_path: str, entered: float) -> None:
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from llmenv.types import Task
    from llmenv.verifiers.math import MathVerifier

    imported = time.time()
    verifier = MathVerifier()
    generation: list[dict] = []
    steps: list[dict] = []
    rewards: list[float] = []

    def arith_reward(prompts, completions, answer, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        out = [float(verifier(t, Task(prompt="", answer=a)).reward) for t, a in zip(texts, answer)]
        rewards.extend(out)
        return out

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            generation.append(
                {
                    "generation_s": time.perf_counter() - t0,
                    "tokens": int(out["completion_mask"].sum()),
                    "cut": int((out["completion_mask"].sum(1) >= spec["max_new_tokens"]).sum()),
                    "prompt_tokens": int(out["prompt_mask"].sum(1).max()),
                }
            )
            return out

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            steps.append({"start": time.time()})

        def on_step_end(self, args, state, control, **kwargs):
            steps[-1]["end"] = time.time()
            steps[-1]["wall_s"] = steps[-1]["end"] - steps[-1]["start"]

    rows = [{"prompt": [{"role": "user", "content": t["prompt"]}], "answer": t["answer"]} for t in spec["tasks"]]
    dataset = datasets.Dataset.from_list(rows)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-trl-") as out:
        args = GRPOConfig(
            output_dir=out,
            max_steps=spec["steps"],
            per_device_train_batch_size=spec["prompts"] * spec["generations"],  # one step = 1 prompt x 4
            gradient_accumulation_steps=1,
            steps_per_generation=1,  # generate once per optimizer step; no buffered off-policy batches
            num_iterations=1,
            num_generations=spec["generations"],
            max_completion_length=spec["max_new_tokens"],
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            learning_rate=spec["lr"],
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            beta=0.0,
            loss_type="dapo",
            epsilon=0.2,
            epsilon_high=0.28,
            scale_rewards="group",
            importance_sampling_level="token",
            mask_truncated_completions=False,
            model_init_kwargs={"dtype": torch.float32},
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,  # TRL's default is True; llmenv's default (used here) is off
            use_cpu=True,
            use_vllm=False,
            shuffle_dataset=False,  # prompts in the dataset's order, as llmenv draws them
            seed=spec["seed"],
            logging_steps=1,  # in-memory log_history only
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            log_completions=False,
            dataloader_num_workers=0,
        )
        t_build = time.time()
        trainer = TimedGRPOTrainer(
            model=spec["model_dir"],
            reward_funcs=arith_reward,
            args=args,
            train_dataset=dataset,
            callbacks=[StepTimer()],
        )
        built = time.time()
        trainer.train()
        trained = time.time()
        history = [h for h in trainer.state.log_history if "loss" in h]
        prompts_seen = []
        dtype = str(next(trainer.model.parameters()).dtype)
        gc_on = bool(getattr(trainer.model, "is_gradient_checkpointing", False))
    for step, gen in zip(steps, generation):
        update_s = step["wall_s"] - gen["generation_s"]
        step.update(
            tokens=gen["tokens"],
            step_time_s=step["wall_s"],
            generation_s=gen["generation_s"],
            update_s=update_s,
            generation_tokens_per_s=gen["tokens"] / gen["generation_s"],
            update_tokens_per_s=gen["tokens"] / update_s,
            cut_fraction=gen["cut"] / spec["generations"],
            prompt_tokens=gen["prompt_tokens"],
        )
    for step, h in zip(steps, history):
        step.update(loss=h.get("loss"), reward_mean=h.get("reward"), trl_step_time=h.get("step_time"))
    result = {
        "entered": entered,
        "imported": imported,
        "train_start": built,
        "train_end": trained,
        "steps": steps,
        "timings": {"build_s": built - t_build},
        "prompts_seen": prompts_seen,
        "rewards": rewards,
        "threads": torch.get_num_threads(),
        "model_dtype": dtype,
        "gradient_checkpointing": gc_on,
        "loss": f"loss_type={args.loss_type} scale_rewards={args.scale_rewards} eps={args.epsilon}/{args.epsilon_high}",
    }
    Path(result_path).write_text(json.dumps(result))


# -- parent ----------------------------------------------------------------------------------------


def run_worker(which: str, spec_path: str, workdir: str, tag: str, rnd: int) -> dict:
    result_path = os.path.join(workdir, f"{tag}.json")
    log_path = os.path.join(workdir, f"{tag}.log")
    env = {**os.environ, **PROCESS_ENV}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", which, "--spec", spec_path, "--result", result_path]
    load_before = os.getloadavg()[0]
    started = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
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
    final_ckpt = r["timings"].get("final_checkpoint_s", 0.0)
    return {
        "wall_s": r["wall_s"],
        "wall_no_ckpt_s": r["wall_s"] - final_ckpt,
        "startup_imports_s": r["imported"] - r["started"],
        "build_s": r["timings"].get("build_s", 0.0),
        "loop_s": steps[-1]["end"] - steps[0]["start"],
        "after_loop_s": r["ended"] - steps[-1]["end"],
        "final_ckpt_s": final_ckpt,
        "step_mean_s": statistics.mean(wall),
        "step_list": wall,
        "gen_s": gen,
        "upd_s": upd,
        "tokens": tokens,
        "gen_tps": tokens / gen,
        "upd_tps": tokens / upd,
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
        "| reward | loss |"
    )
    print(
        "|-----|------|--------|--------------|----------|-------------------|-----|-----------|--------------|--------|------|"
    )
    for r in ok:
        for k, s in enumerate(r["steps"]):
            print(
                f"| {name(r)} | {k + 1} | {s['step_time_s']:.2f} | "
                f"{s['generation_s']:.2f} | {s['update_s']:.2f} | {s['tokens']} | {s['cut_fraction']:.2f} | "
                f"{s['generation_tokens_per_s']:.0f} | {s['update_tokens_per_s']:.0f} | "
                f"{(s.get('reward_mean') or 0):.2f} | {(s.get('loss') or 0):+.4f} |"
            )
    print("\n### whole process and per step\n")
    header = (
        "| run | process wall s | wall s w/o final ckpt | python start + imports s | model load/build s | "
        "3-step loop s | after loop s | mean step s | gen tok/s | update tok/s |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    sums: dict[str, list[dict]] = {"ours": [], "trl": []}
    for r in ok:
        s = summarise(r)
        sums[r["which"]].append(s)
        print(
            f"| {name(r)} | {s['wall_s']:.1f} | {s['wall_no_ckpt_s']:.1f} | {s['startup_imports_s']:.1f} | "
            f"{s['build_s']:.1f} | {s['loop_s']:.1f} | {s['after_loop_s']:.1f} "
            f"(ckpt {s['final_ckpt_s']:.1f}) | {s['step_mean_s']:.2f} | {s['gen_tps']:.0f} | {s['upd_tps']:.0f} |"
        )
    if sums["ours"] and sums["trl"]:

        def med(which: str, key: str) -> float:
            return statistics.median(s[key] for s in sums[which])

        print("\n### ratio TRL / llmenv (>1 = llmenv faster)\n")
        for label, key in (
            ("whole process", "wall_s"),
            ("whole process, llmenv without its final checkpoint", None),
            ("3-step loop (first step start to last step end)", "loop_s"),
            ("mean step", "step_mean_s"),
            ("generation phase (sum over steps)", "gen_s"),
            ("update phase (sum over steps)", "upd_s"),
        ):
            if key is None:
                ratio = med("trl", "wall_s") / med("ours", "wall_no_ckpt_s")
            else:
                ratio = med("trl", key) / med("ours", key)
            print(f"  {label:<52} {ratio:5.2f}x")
    trl = [r for r in ok if r["which"] == "trl"]
    if trl:
        print(
            f"\nTRL model dtype {trl[0]['model_dtype']}, gradient checkpointing {trl[0]['gradient_checkpointing']}, "
            f"{trl[0]['loss']}, torch threads {trl[0]['threads']}"
        )
    ours = [r for r in ok if r["which"] == "ours"]
    if ours:
        same = ours[0]["prompts_seen"] == [t["prompt"] for t in spec["tasks"]]
        print(f"llmenv: {ours[0]['loss']}, torch threads {ours[0]['threads']}; prompts drawn == TRL dataset: {same}")
        print("llmenv timings: " + ", ".join(f"{k} {v:.2f}" for k, v in ours[0]["timings"].items()))
    print(
        "load average (1 min) before/after each run: "
        + ", ".join(f"{name(r)} {r['load_before']:.2f}/{r['load_after']:.2f}" for r in ok)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=1, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-6)
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
    print(f"model: {spec['model_dir']} (fp32, CPU)")
    print(
        f"job: {args.steps} steps x {args.prompts} prompt x {args.generations} generations, "
        f"<= {args.max_new_tokens} new tokens, temperature 1.0, lr {args.lr}, beta 0, seed {args.seed}"
    )
    print(
        "loss selected: DAPO token mean + clip-higher: TRL loss_type='dapo', epsilon=0.2, epsilon_high=0.28, "
        "scale_rewards='group' | llmenv loss_aggregation='token_mean', clip_low=0.2, clip_high=0.28, advantage='std'"
    )
    for i, t in enumerate(spec["tasks"]):
        print(f"  prompt {i + 1}: {t['prompt']!r} -> {t['answer']} ({t['prompt_tokens']} prompt tokens)")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    order = [w.strip() for w in args.order.split(",") if w.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as workdir:
        spec_path = os.path.join(workdir, "spec.json")
        Path(spec_path).write_text(json.dumps(spec))
        for rnd in range(args.rounds):
            for which in order if rnd % 2 == 0 else order[::-1]:
                print(f"running {which} (round {rnd + 1}/{args.rounds}) ...", flush=True)
                r = run_worker(which, spec_path, workdir, f"{which}-{rnd}", rnd + 1)
                results.append(r)
                print(
                    f"  {which}: {r['wall_s']:.1f} s whole process"
                    + (f"  FAILED {r['error']}" if "error" in r else ""),
                    flush=True,
                )
    print_report(spec, results)


if __name__ == "__main__":
    main()
