"""A run folder that explains itself: the resolved config, metrics as CSV and JSONL, TensorBoard
events when tensorboardX is installed, and a PNG learning curve at the end.

Rows are appended between compiled chunks (never from inside ``jit``), each batch as whole
lines in one write, flushed and fsynced; a line torn by a crash mid-write is dropped with a
warning when the log is read back. On resume, rows logged after the restored checkpoint are
dropped first: those chunks are recomputed, and a curve must not show them twice. A write the
disk refuses raises ``RunWriteError`` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pathlib
import warnings
from typing import Any, Iterable, Iterator, Optional

from eggroll_rl.agents.checkpoints import describe_os_error, write_atomically
from eggroll_rl.agents.faults import RunWriteError


@contextlib.contextmanager
def _writing(path: pathlib.Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into a one-line ``RunWriteError``."""
    try:
        yield
    except OSError as error:
        if isinstance(error, RunWriteError):
            raise
        raise RunWriteError(
            f"could not write {path}: {describe_os_error(error)} (free space or fix the folder, "
            "then resume the run)."
        ) from error


class RunLog:
    """The logs of one run folder (created if needed); ``tensorboard`` also writes TensorBoard
    events when tensorboardX is importable."""

    def __init__(self, run_dir: pathlib.Path, tensorboard: bool = True):
        self.run_dir = pathlib.Path(run_dir)
        with _writing(self.run_dir):
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
        path = self.run_dir / "config.json"
        with _writing(path):
            write_atomically(path, json.dumps(config, indent=2, default=str))

    def rows(self) -> list[dict]:
        """Every row of metrics.jsonl; a line that does not parse (torn by a crash mid-write)
        is left out with a warning."""
        if not self.jsonl_path.exists():
            return []
        rows = []
        for number, line in enumerate(self.jsonl_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "iteration" not in row:
                warnings.warn(
                    f"{self.jsonl_path} line {number} is incomplete (torn by a crash while "
                    "writing); dropped.",
                    stacklevel=2,
                )
                continue
            rows.append(row)
        return rows

    def truncate_after(self, iteration: int) -> None:
        """Keep only rows with ``iteration <= iteration`` (used when resuming); the files are
        replaced atomically, torn lines dropped."""
        kept = [row for row in self.rows() if row["iteration"] <= iteration]
        with _writing(self.jsonl_path):
            write_atomically(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in kept))
        self._rewrite_csv(kept)

    def _rewrite_csv(self, rows: list[dict]) -> None:
        with _writing(self.csv_path):
            if not rows:
                self.csv_path.unlink(missing_ok=True)
                return
            fields = list(dict.fromkeys(key for row in rows for key in row))
            buffer = _CsvText()
            writer = csv.DictWriter(buffer, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            write_atomically(self.csv_path, buffer.text)

    def append(self, rows: Iterable[dict]) -> None:
        """Append rows to metrics.jsonl and metrics.csv (and TensorBoard): whole lines in one
        write, flushed and fsynced, so a crash leaves at most one torn last line."""
        rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
        if not rows:
            return
        with _writing(self.jsonl_path):
            _append_lines(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in rows))
        with _writing(self.csv_path):
            self._append_csv(rows)
        if self._writer is not None:
            for row in rows:
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "iteration":
                        self._writer.add_scalar(key, value, row.get("env_steps", row["iteration"]))
            self._writer.flush()

    def _append_csv(self, rows: list[dict]) -> None:
        existing_fields = None
        if self.csv_path.exists():
            with self.csv_path.open() as handle:
                existing_fields = next(csv.reader(handle), None)
        fields = list(dict.fromkeys(key for row in rows for key in row))
        if existing_fields is not None and set(fields) - set(existing_fields):
            self._rewrite_csv(self.rows())  # a new column appeared: rewrite with all columns
        else:
            buffer = _CsvText()
            writer = csv.DictWriter(buffer, fieldnames=existing_fields or fields)
            if existing_fields is None:
                writer.writeheader()
            writer.writerows(rows)
            _append_lines(self.csv_path, buffer.text)

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
        try:
            with _writing(path):
                fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class _CsvText:
    """A text sink for ``csv.writer``, so a batch of lines is written in one call."""

    def __init__(self):
        self.text = ""

    def write(self, chunk: str) -> None:
        self.text += chunk


def _append_lines(path: pathlib.Path, text: str) -> None:
    """Append whole lines in one write, then flush and fsync; after a torn last line (a crash
    mid-write) the new lines start on a line of their own."""
    with open(path, "ab") as handle:
        if handle.tell() > 0:
            with open(path, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    text = "\n" + text
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())


def _plain(value: Any) -> Any:
    """JSON-friendly scalars from numpy/JAX values."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
