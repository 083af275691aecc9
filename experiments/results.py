"""The results table of a comparison: one row per (env, algo, seed, eval point), as CSV.

Plots and summaries are redrawn from this file alone, so it is written row by row as each
(env, algo) pair finishes and never holds anything a rerun could not reproduce. Curves are
averaged over seeds per eval point (``iteration``): every seed of a vmapped run is evaluated
at the same iteration and wall-clock time; ES seeds can differ slightly in env steps there
(episode lengths differ), so the x position is the seeds' mean.
"""

from __future__ import annotations

import csv
import math
import pathlib
from typing import Iterable

COLUMNS = ("env", "algo", "seed", "iteration", "env_steps", "wall_s", "eval_return")
ALGOS = ("eggroll", "openes", "ppo")  # the algo column's values, in the order tables list them
_TYPES = {"seed": int, "iteration": int, "env_steps": int, "wall_s": float, "eval_return": float}


def read(path: pathlib.Path) -> list[dict]:
    """Rows of a results.csv with numbers parsed (missing file: no rows)."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a results table, columns {sorted(missing)} missing.")
        return [{k: _TYPES.get(k, str)(row[k]) for k in COLUMNS} for row in reader]


def write(path: pathlib.Path, rows: Iterable[dict]) -> None:
    """Replace ``path`` with ``rows`` (written to a temporary file, then renamed)."""
    path = pathlib.Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def replace_pair(path: pathlib.Path, env: str, algo: str, rows: list[dict]) -> None:
    """Store ``rows`` as the results of (env, algo), dropping any older rows of that pair."""
    kept = [r for r in read(path) if (r["env"], r["algo"]) != (env, algo)]
    write(path, kept + [{**row, "env": env, "algo": algo} for row in rows])


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def curve(rows: list[dict]) -> list[dict]:
    """Per eval point of one (env, algo): mean env steps, wall s, eval return mean and s.e."""
    points = {}
    for row in rows:
        points.setdefault(row["iteration"], []).append(row)
    out = []
    for iteration in sorted(points):
        group = points[iteration]
        mean, se = mean_se([r["eval_return"] for r in group])
        out.append({
            "iteration": iteration,
            "env_steps": sum(r["env_steps"] for r in group) / len(group),
            "wall_s": max(r["wall_s"] for r in group),
            "mean": mean,
            "se": se,
            "seeds": len(group),
        })
    return out


def pairs(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{env: {algo: rows}}`` in order of first appearance."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        grouped.setdefault(row["env"], {}).setdefault(row["algo"], []).append(row)
    return grouped
