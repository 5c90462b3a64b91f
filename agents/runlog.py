"""Training-run records: one JSON line of metrics per step, TensorBoard events when installed, a reward plot.

Every learner writes through `RunLog`, so runs look alike on disk: `metrics.jsonl` (appended on
resume), `events.*` for TensorBoard, and `reward.png` redrawn from the JSONL. It records what it
is given and never decides what to log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class RunLog:
    """Appends step metrics to `out/metrics.jsonl` (and TensorBoard) and plots reward over steps."""

    def __init__(self, out: str | Path, *, resume: bool = False) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "metrics.jsonl"
        if not resume and self.path.exists():
            self.path.unlink()
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out))
        except ImportError:  # tensorboard is optional
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
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self, key: str = "reward_mean", filename: str = "reward.png") -> Path:
        """Draw `key` over steps to a PNG and return its path."""
        from matplotlib.figure import Figure  # not pyplot: no global backend switch, and a lighter import

        rows = [r for r in self.rows() if r.get(key) is not None]
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{key} over training steps")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out / filename
        fig.savefig(path, dpi=100)
        return path

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.close()
