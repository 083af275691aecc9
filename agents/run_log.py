"""A run folder that explains itself: the resolved config, metrics as CSV and JSONL, TensorBoard
events when tensorboardX is installed, and a PNG learning curve at the end.

Rows are appended between compiled chunks (never from inside ``jit``). On resume, rows logged
after the restored checkpoint are dropped first: those chunks are recomputed, and a curve must
not show them twice.
"""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any, Iterable, Optional


class RunLog:
    """The logs of one run folder (created if needed); ``tensorboard`` also writes TensorBoard
    events when tensorboardX is importable."""

    def __init__(self, run_dir: pathlib.Path, tensorboard: bool = True):
        self.run_dir = pathlib.Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self._writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                pass
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def write_config(self, config: dict) -> None:
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))

    def rows(self) -> list[dict]:
        if not self.jsonl_path.exists():
            return []
        return [json.loads(line) for line in self.jsonl_path.read_text().splitlines() if line]

    def truncate_after(self, iteration: int) -> None:
        """Keep only rows with ``iteration <= iteration`` (used when resuming)."""
        kept = [row for row in self.rows() if row["iteration"] <= iteration]
        self.jsonl_path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        self._rewrite_csv(kept)

    def _rewrite_csv(self, rows: list[dict]) -> None:
        if not rows:
            self.csv_path.unlink(missing_ok=True)
            return
        fields = list(dict.fromkeys(key for row in rows for key in row))
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, rows: Iterable[dict]) -> None:
        rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
        if not rows:
            return
        with self.jsonl_path.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        existing_fields = None
        if self.csv_path.exists():
            with self.csv_path.open() as handle:
                existing_fields = next(csv.reader(handle), None)
        fields = list(dict.fromkeys(key for row in rows for key in row))
        if existing_fields is not None and set(fields) - set(existing_fields):
            self._rewrite_csv(self.rows())  # a new column appeared: rewrite with all columns
        else:
            with self.csv_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=existing_fields or fields)
                if existing_fields is None:
                    writer.writeheader()
                writer.writerows(rows)
        if self._writer is not None:
            for row in rows:
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "iteration":
                        self._writer.add_scalar(key, value, row.get("env_steps", row["iteration"]))
            self._writer.flush()

    def plot(
        self,
        title: str,
        y: str = "eval_return",
        path: Optional[pathlib.Path] = None,
        threshold: Optional[float] = None,
    ) -> pathlib.Path:
        """Learning curve of ``y`` against env steps (one line per seed), as a PNG.

        Args:
            title: the figure title (e.g. algorithm, env id and seeds).
            y: the metrics column on the vertical axis.
            path: where to write (default ``run_dir/curve.png``).
            threshold: drawn as a dashed horizontal line (e.g. the preset's solved return).

        Returns:
            The PNG's path.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [row for row in self.rows() if row.get(y) is not None]
        path = path or self.run_dir / "curve.png"
        fig, ax = plt.subplots(figsize=(6, 4))
        for seed in sorted({row.get("seed", 0) for row in rows}):
            points = [(row["env_steps"], row[y]) for row in rows if row.get("seed", 0) == seed]
            ax.plot(*zip(*points), label=f"seed {seed}") if points else None
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=1,
                       label=f"threshold {threshold:g}")
        ax.set_xlabel("env steps")
        ax.set_ylabel(y.replace("_", " "))
        ax.set_title(title)
        if rows or threshold is not None:
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _plain(value: Any) -> Any:
    """JSON-friendly scalars from numpy/JAX values."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
