"""``eggroll-rl plot DIR...``: learning curves redrawn from saved results.csv files.

A comparison is judged on two axes: sample efficiency (return against env steps) and speed
(return against wall-clock seconds of training, compile excluded). Each env gets one row of
two panels; each algorithm one line, the mean over seeds with a band of one standard error.
Several result folders overlay (their lines are labelled ``folder:algo``), so runs made on
different machines or commits compare on one figure.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Optional, Sequence

from eggroll_rl.experiments import results


def draw(runs: Sequence[tuple[str, list[dict]]], path: pathlib.Path, title: str = "") -> pathlib.Path:
    """Write the figure of ``runs`` (``(label, rows)`` pairs; label "" for one run) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = list(dict.fromkeys(row["env"] for _, rows in runs for row in rows))
    fig, axes = plt.subplots(
        max(1, len(env_ids)), 2, figsize=(11, 3.6 * max(1, len(env_ids))), squeeze=False
    )
    for (ax_steps, ax_wall), env_id in zip(axes, env_ids):
        for label, rows in runs:
            for algo, algo_rows in results.pairs(rows).get(env_id, {}).items():
                points = results.curve(algo_rows)
                name = f"{label}:{algo}" if label else algo
                for ax, x_key in ((ax_steps, "env_steps"), (ax_wall, "wall_s")):
                    xs = [p[x_key] for p in points]
                    mean = [p["mean"] for p in points]
                    (line,) = ax.plot(xs, mean, label=f"{name} (n={points[-1]['seeds']})")
                    ax.fill_between(
                        xs,
                        [p["mean"] - p["se"] for p in points],
                        [p["mean"] + p["se"] for p in points],
                        color=line.get_color(),
                        alpha=0.2,
                    )
        ax_steps.set_xlabel("env steps (per seed)")
        ax_wall.set_xlabel("wall-clock s (training, compile excluded)")
        for ax in (ax_steps, ax_wall):
            ax.set_ylabel("eval return (mean ± s.e.)")
            ax.set_title(env_id, fontsize="medium")
            ax.grid(alpha=0.3)
        if ax_steps.lines:
            ax_steps.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(prog="eggroll-rl plot", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("dirs", nargs="+", type=pathlib.Path, help="folders holding results.csv")
    parser.add_argument(
        "--out", type=pathlib.Path,
        help="PNG to write (default: DIR/curves.png for one folder, curves-overlay.png for several)",
    )
    args = parser.parse_args(argv)
    runs = []
    for folder in args.dirs:
        rows = results.read(folder / "results.csv")
        if not rows:
            parser.error(f"{folder / 'results.csv'} is missing or empty.")
        runs.append((folder.resolve().name if len(args.dirs) > 1 else "", rows))
    out = args.out or (args.dirs[0] / "curves.png" if len(args.dirs) == 1 else pathlib.Path("curves-overlay.png"))
    print(draw(runs, out))


if __name__ == "__main__":
    main()
