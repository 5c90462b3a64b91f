"""The plumbing of the side-by-side trainer benchmarks (llmenv vs TRL): worker processes, step timing, peak RSS.

Each side runs in its own fresh Python process (`run_worker`), TRL imported from a side folder
prepended to PYTHONPATH, so neither side's imports, caches or allocator state reach the other. A
worker prints one JSON line last; `rss_mb` is its own peak resident set, and `trl_step_timer` is
a TrainerCallback recording each optimisation step's seconds; `timings` are the medians every table
reports, and `main` is the command line every side-by-side script shares. Import it with this folder appended
to `sys.path` (after site-packages: benchmarks/math_verify.py must not shadow the package).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROCESS_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
               "WANDB_DISABLED": "true", "TRL_EXPERIMENTAL_SILENCE": "1"}  # fmt: skip


def rss_mb() -> float:
    """This process's own peak resident set so far, MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trl_step_timer(times: list[float]) -> Any:
    """A transformers TrainerCallback that appends each optimisation step's wall seconds to `times`."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.started)

    return StepTimer()


def run_worker(script: str, side: str, spec_path: Path, trl_path: str | None) -> dict:
    """`script --worker side --spec spec_path` in a fresh process: its JSON result, wall time and peak RSS."""
    env = {**os.environ, **PROCESS_ENV}
    if side == "trl" and trl_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(trl_path), env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, "--worker", side, "--spec", str(spec_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "peak_rss_mb": result.pop("self_peak_rss_mb")}


def worker_output(result: dict) -> None:
    """Print a worker's result as its last stdout line, with its peak RSS."""
    print(json.dumps({**result, "self_peak_rss_mb": rss_mb()}))


def alternate(script: str, spec_path: Path, rounds: int, trl_path: str | None) -> dict[str, list[dict]]:
    """Both sides `rounds` times, alternating which goes first; each run's result per side."""
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for round_ in range(rounds):
        for side in ("ours", "trl") if round_ % 2 == 0 else ("trl", "ours"):
            runs[side].append(run_worker(script, side, spec_path, trl_path))
            print(f"round {round_ + 1} {side}: {runs[side][-1]['wall_s']:.1f} s", flush=True)
    return runs


def timings(results: list[dict]) -> dict[str, float]:
    """Medians over rounds: seconds per step (the median of each run's median step), wall seconds, peak RSS MB."""
    return {
        "step_s": statistics.median(statistics.median(r["step_s"]) for r in results),
        "wall_s": statistics.median(r["wall_s"] for r in results),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results),
    }


def main(
    script: str,
    doc: str,
    *,
    prepare: Callable[[Path, argparse.Namespace], dict],
    workers: dict[str, Callable[[dict], dict]],
    summarise: Callable[[list[dict]], dict],
    table: Callable[[dict], str],
    steps: int,
    rounds: int,
    out: str,
    anchor: str = "trl 1.16",
    extra_flags: Callable[[argparse.ArgumentParser], None] | None = None,
    finish: Callable[[dict, dict], None] | None = None,
) -> None:
    """A side-by-side script's command line: as a worker, run one side; else prepare, alternate, tabulate, save.

    `finish(summary, runs)` may add to the summary before it is written and printed.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=8)
    if extra_flags is not None:
        extra_flags(parser)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--trl-path", default=None, help=f"folder holding {anchor} (prepended to PYTHONPATH)")
    parser.add_argument("--out", default=out)
    parser.add_argument("--worker", choices=sorted(workers), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_output(workers[args.worker](json.loads(Path(args.spec).read_text())))
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(prepare(work, args)))
        runs = alternate(script, spec_path, args.rounds, args.trl_path)
    summary = {side: summarise(results) for side, results in runs.items()}
    if finish is not None:
        finish(summary, runs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(table(summary))
