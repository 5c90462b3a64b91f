"""The plumbing of the side-by-side trainer benchmarks (llmenv vs TRL): worker processes, step timing, peak RSS.

Each side runs in its own fresh Python process (`run_worker`), TRL imported from a side folder
prepended to PYTHONPATH, so neither side's imports, caches or allocator state reach the other. A
worker prints one JSON line last; `rss_mb` is its own peak resident set, and `trl_step_timer` is
a TrainerCallback recording each optimisation step's seconds. Import it with this folder appended
to `sys.path` (after site-packages: benchmarks/math_verify.py must not shadow the package).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
