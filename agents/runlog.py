"""Training-run records: one JSON line of metrics per step, TensorBoard events when installed, a reward plot.

Every learner writes through `RunLog`, so runs look alike on disk: `metrics.jsonl` (one row per
step; a resumed run first drops the rows after the step it resumes from, so a re-run step is not
recorded twice), `events.*` for TensorBoard (resumed with `purge_step`, so TensorBoard shows one
run), and `reward.png` redrawn from the JSONL. It records what it is given and never decides what
to log.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class RunLog:
    """Appends step metrics to `out/metrics.jsonl` (and TensorBoard) and plots reward over steps."""

    def __init__(self, out: str | Path, *, resume_from: int | None = None) -> None:
        """Start a log in `out`; `resume_from=step` keeps the rows up to that step and drops later ones."""
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "metrics.jsonl"
        if resume_from is None:  # a fresh run: no rows or TensorBoard events of an earlier one
            self.path.unlink(missing_ok=True)
            for events in self.out.glob("events.out.tfevents.*"):
                events.unlink()
        elif self.path.exists():
            kept = [r for r in self.rows() if int(r.get("step", 0)) <= resume_from]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - tensorboard is optional

            # purge_step drops events logged after the checkpoint by the run that was interrupted
            purge = None if resume_from is None else resume_from + 1
            self._tb = SummaryWriter(str(self.out), purge_step=purge)
        except ImportError:
            self._tb = None

    def log(self, metrics: Mapping[str, Any]) -> None:
        """Write one step's metrics (must include `step`)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, metrics["step"])
            self._tb.flush()

    def rows(self) -> list[dict[str, Any]]:
        """Every logged step, in order."""
        return read_metrics(self.out)

    def plot(
        self,
        key: str = "reward_mean",
        filename: str = "reward.png",
        *,
        title: str | None = None,
        marks: Mapping[str, float] | None = None,
    ) -> Path:
        """Draw `key` over steps to a PNG (see `plot_metrics`) and return its path."""
        return plot_metrics(self.out, key, filename, title=title, marks=marks)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.close()


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """The rows of `out/metrics.jsonl`, in order (empty when there is none)."""
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_metrics(
    out: str | Path,
    key: str = "reward_mean",
    filename: str = "reward.png",
    *,
    title: str | None = None,
    marks: Mapping[str, float] | None = None,
) -> Path:
    """Draw `key` from `out/metrics.jsonl` over steps to `out/filename`; `marks` adds labelled horizontal lines."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - not pyplot: no global backend switch, lighter import

    rows = [r for r in read_metrics(out) if r.get(key) is not None]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title or f"{key} over training steps", fontsize=9)
    for (label, value), style in zip((marks or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, linestyle=style, color="grey", linewidth=1, label=label)
    if marks:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out) / filename
    fig.savefig(path, dpi=100)
    return path
