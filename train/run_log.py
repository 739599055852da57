"""What a training run reports: a tqdm bar, JSONL metrics, TensorBoard scalars and a loss-curve PNG (rank 0 only).

Every metric goes under its own name (``loss``, ``contrastive_loss``, ``cluster_loss``, ``reconstruction_loss``,
``lr``, ``clips_per_s``, ...) in ``RUN/metrics.jsonl`` and in TensorBoard under ``RUN/tensorboard``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

METRICS = "metrics.jsonl"
PLOT = "loss_curves.png"
BAR_KEYS = ("loss", "contrastive_loss", "cluster_loss", "reconstruction_loss")


class RunLog:
    """Writes metrics of the main rank; on other ranks every method does nothing."""

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool,
        total_steps: int,
        start_step: int,
        progress: bool = True,
        tensorboard: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._bar = None
        self._writer = None
        self._file = None
        if not enabled:
            return
        self._file = open(self.run_dir / METRICS, "a")  # noqa: SIM115 (open for the whole run, closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step or None)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "epoch": epoch, "time": round(time.time(), 3), **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in metrics.items():
                self._writer.add_scalar(f"train/{name}", value, step)
        if self._bar is not None:
            shown = {k.replace("_loss", ""): f"{metrics[k]:.4g}" for k in BAR_KEYS if k in metrics}
            if "clips_per_s" in metrics:
                shown["clips/s"] = f"{metrics['clips_per_s']:.0f}"
            self._bar.set_postfix(shown, refresh=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def plot_losses(run_dir: str | Path) -> Path | None:
    """Draw every ``*loss`` series of the run's metrics against the step into ``RUN/loss_curves.png``."""
    records = read_metrics(run_dir)
    names = sorted({k for r in records for k in r if k.endswith("loss")})
    if not records or not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    by_step: dict[int, dict] = {
        r["step"]: r for r in records
    }  # a resumed run may repeat steps: keep the last
    steps = sorted(by_step)
    for name in names:
        points = [(s, by_step[s][name]) for s in steps if name in by_step[s]]
        axis.plot([p[0] for p in points], [p[1] for p in points], label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("symlog", linthresh=1e-2)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = Path(run_dir) / PLOT
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
