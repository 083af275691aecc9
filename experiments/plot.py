"""``eggroll-rl plot DIR...``: learning curves redrawn from saved results.csv files.

A comparison is judged on two axes: sample efficiency (return against env steps) and speed
(return against wall-clock seconds of training, compile excluded). Each env gets two panels,
two envs to a row; each algorithm one line, the mean over seeds with a band of one standard
error. One folder with its ``meta.json`` is drawn as the paper does, normalised by PPO's final
return (0: random, 1: PPO) wherever that is defined (``report.ppo_scale``); overlays of several
folders are drawn as raw returns.
Several result folders overlay (their lines are labelled ``folder:algo``), so runs made on
different machines or commits compare on one figure.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Optional, Sequence

from eggroll_rl.experiments import results


def draw(
    runs: Sequence[tuple[str, list[dict]]],
    path: pathlib.Path,
    title: str = "",
    scales: Optional[dict[str, tuple[float, float]]] = None,
    columns: int = 2,
) -> pathlib.Path:
    """Write the figure of ``runs`` to ``path``: a pair of panels (against env steps, against
    wall-clock) per env, ``columns`` envs side by side, so a whole suite fits one page.

    Args:
      runs: ``(label, rows)`` pairs (label "" for one run).
      path: the PNG to write.
      title: the figure's title.
      scales: env id -> ``(offset, scale)``; that env's returns are drawn as
        ``(R - offset) / scale`` (PPO-normalised: ``report.ppo_scale``), others as they are.
      columns: envs per row of the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = scales or {}
    env_ids = list(dict.fromkeys(row["env"] for _, rows in runs for row in rows))
    columns = max(1, min(columns, len(env_ids)))
    grid_rows = max(1, -(-len(env_ids) // columns))
    fig, axes = plt.subplots(grid_rows, 2 * columns, figsize=(5.5 * columns, 3.2 * grid_rows),
                             squeeze=False)
    for index, env_id in enumerate(env_ids):
        ax_steps, ax_wall = axes[index // columns][2 * (index % columns):2 * (index % columns) + 2]
        offset, scale = scales.get(env_id, (0.0, 1.0))
        for label, rows in runs:
            for algo, algo_rows in results.pairs(rows).get(env_id, {}).items():
                points = results.curve(algo_rows)
                name = f"{label}:{algo}" if label else algo
                mean = [(p["mean"] - offset) / scale for p in points]
                se = [p["se"] / scale for p in points]
                for ax, x_key in ((ax_steps, "env_steps"), (ax_wall, "wall_s")):
                    xs = [p[x_key] for p in points]
                    (line,) = ax.plot(xs, mean, label=f"{name} (n={points[-1]['seeds']})")
                    ax.fill_between(xs, [m - e for m, e in zip(mean, se)],
                                    [m + e for m, e in zip(mean, se)],
                                    color=line.get_color(), alpha=0.2)
        ax_steps.set_xlabel("env steps (per seed)")
        ax_wall.set_xlabel("training s (compile excluded)")
        for ax in (ax_steps, ax_wall):
            ax.set_ylabel("PPO-normalised return" if env_id in scales else "eval return")
            ax.set_title(env_id, fontsize="medium")
            ax.grid(alpha=0.3)
        if ax_steps.lines:
            ax_steps.legend(fontsize="small")
    for index in range(len(env_ids), grid_rows * columns):  # empty cells of the last row
        for ax in axes[index // columns][2 * (index % columns):2 * (index % columns) + 2]:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=80 if grid_rows > 4 else 100)
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
    scales = None
    if len(args.dirs) == 1 and (args.dirs[0] / "meta.json").exists():
        import json

        from eggroll_rl.experiments import report

        scales = report.env_scales(runs[0][1], json.loads((args.dirs[0] / "meta.json").read_text()))
    print(draw(runs, out, scales=scales))


if __name__ == "__main__":
    main()
