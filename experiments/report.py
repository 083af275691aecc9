"""summary.md of a comparison: final returns, PPO-normalised scores, speed, time to threshold.

Scores follow the paper in normalising by PPO, here as ``(R - R_random) / (R_PPO - R_random)``
so that 0 is a random policy and 1 is PPO on every env, negative returns included. Where PPO
is no better than random (its mean within two standard errors, or 1%, of the random return)
the ratio would only amplify noise, so the summary says so instead of dividing.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from eggroll_rl.experiments import results


def final_returns(rows: list[dict]) -> list[float]:
    """Each seed's eval return at its last eval point."""
    last: dict[int, dict] = {}
    for row in rows:
        if row["seed"] not in last or row["iteration"] >= last[row["seed"]]["iteration"]:
            last[row["seed"]] = row
    return [last[seed]["eval_return"] for seed in sorted(last)]


def ppo_scale(
    ppo: Optional[tuple[float, float]], random_return: Optional[float]
) -> Optional[tuple[float, float]]:
    """``(R_random, R_PPO - R_random)``, the offset and scale of PPO-normalised returns, or
    None where they would mislead: no PPO run, no random baseline, or PPO's mean within two
    standard errors (or 1%) of the random return, where the ratio would only amplify noise."""
    if ppo is None or random_return is None:
        return None
    ppo_mean, ppo_se = ppo
    gap = ppo_mean - random_return
    if gap <= max(2 * ppo_se, 0.01 * max(abs(ppo_mean), abs(random_return)), 1e-8):
        return None
    return random_return, gap


def env_scales(rows: list[dict], meta: dict) -> dict[str, tuple[float, float]]:
    """``ppo_scale`` of every env of a comparison where it is defined (for the figure)."""
    scales = {}
    for env_id, pairs in results.pairs(rows).items():
        ppo = results.mean_se(final_returns(pairs["ppo"])) if "ppo" in pairs else None
        scale = ppo_scale(ppo, meta.get("envs", {}).get(env_id, {}).get("random_return"))
        if scale is not None:
            scales[env_id] = scale
    return scales


def normalised(
    value: float, ppo: Optional[tuple[float, float]], random_return: Optional[float]
) -> str:
    """``(value - random) / (PPO - random)`` formatted to two decimals, or why it is not given.

    Args:
      value: a final return.
      ppo: PPO's mean final return and its standard error, or None without a PPO run.
      random_return: the random policy's return, or None if it was not measured.

    Returns:
      The score as text, or a short reason (no PPO run, no random baseline, or PPO within
      noise of random, where the ratio would be meaningless: ``ppo_scale``).
    """
    if ppo is None:
        return "no PPO run"
    if random_return is None:
        return "no random baseline"
    scale = ppo_scale(ppo, random_return)
    if scale is None:
        return f"PPO near random ({ppo[0]:.4g} vs {random_return:.4g}): not normalised"
    return f"{(value - scale[0]) / scale[1]:.2f}"


def threshold_time(rows: list[dict], threshold: Optional[float]) -> str:
    """Env steps and wall-clock seconds at which the seed-mean return curve of ``rows`` first
    reaches ``threshold``, as text; "not reached" or "no threshold" otherwise."""
    if threshold is None:
        return "no threshold"
    for point in results.curve(rows):
        if point["mean"] >= threshold:
            return f"{point['env_steps']:,.0f} steps / {point['wall_s']:.1f} s"
    return "not reached"


def _speed(rows: list[dict]) -> float:
    """Env steps per second of one (env, algo), all seeds, at its last eval point."""
    last = max(rows, key=lambda r: r["iteration"])
    steps = sum(r["env_steps"] for r in rows if r["iteration"] == last["iteration"])
    return steps / last["wall_s"] if last["wall_s"] > 0 else float("nan")


def env_section(env_id: str, pairs: dict[str, list[dict]], info: dict) -> str:
    """The markdown section of one env (``info``: that env's entry of meta.json)."""
    threshold, random_return = info.get("threshold"), info.get("random_return")
    lines = [f"## {env_id}", ""]
    if info.get("skipped"):
        return "\n".join(lines + [f"Skipped: {info['skipped']}", ""])
    lines.append(
        f"Budget {info.get('total_steps', 0):,} env steps per seed; random policy return "
        + (f"{random_return:.4g}" if random_return is not None else "not measured")
        + (f"; threshold {threshold:g}." if threshold is not None else "; no threshold for this env.")
        + "".join(
            f" {label}: {', '.join(algos)}."
            for label, algos in (
                (label, [a for a, done in info.get("algos", {}).items() if done.get(key)])
                for key, label in (("seeds_in_sequence", "Seeds in sequence"),
                                   ("xla_cpu_options", "Compiled with XLA:CPU options"))
            ) if algos
        )
    )
    lines += [
        "",
        "| algo | final return (mean ± s.e.) | seeds | PPO-normalised | env steps/s (all seeds) "
        "| train s | compile s | time to threshold (mean curve) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ppo = results.mean_se(final_returns(pairs["ppo"])) if "ppo" in pairs else None
    for algo, rows in pairs.items():
        finals = final_returns(rows)
        mean, se = results.mean_se(finals)
        algo_info = info.get("algos", {}).get(algo, {})
        last = max(rows, key=lambda r: r["iteration"])
        speed = _speed(rows)
        compile_s = algo_info.get("compile_s")
        lines.append(
            f"| {algo} | {mean:.4g} ± {se:.2g} | {len(finals)} | {normalised(mean, ppo, random_return)} "
            f"| {speed:,.0f} | {last['wall_s']:.1f} | "
            f"{'-' if compile_s is None else f'{compile_s:.1f}'} | {threshold_time(rows, threshold)} |"
        )
    return "\n".join(lines + [""])


def summary(rows: list[dict], meta: dict) -> str:
    """The whole summary.md: run metadata, the table over all envs, then one section per env
    (skipped envs included)."""
    head = [
        "# Comparison",
        "",
        f"`{meta.get('command', '')}`",
        "",
        f"{meta.get('date', '')}; {meta.get('cores', '?')} cores ({meta.get('cpu', '?')}); "
        f"JAX {meta.get('jax', '?')} on {meta.get('backend', '?')}. "
        "Final return: each seed's last eval (mean policy, fresh episodes), mean ± standard error "
        "over seeds. Train s excludes compilation. PPO-normalised: (R - R_random) / "
        "(R_PPO - R_random).",
        "",
        *overview(rows, meta).table,
        "",
    ]
    grouped = results.pairs(rows)
    sections = []
    for env_id, info in meta.get("envs", {}).items():
        if env_id in grouped or info.get("skipped"):
            sections.append(env_section(env_id, grouped.get(env_id, {}), info))
    return "\n".join(head + sections)


def verdict(eggroll: list[float], other: list[float]) -> str:
    """EGGROLL against another algorithm on one env, from final returns per seed.

    "better" / "worse" when the means differ by more than two standard errors of their
    difference (sqrt(se_a^2 + se_b^2)), else "competitive": the three classes the paper counts.
    """
    (mean_e, se_e), (mean_o, se_o) = results.mean_se(eggroll), results.mean_se(other)
    margin = 2 * (se_e**2 + se_o**2) ** 0.5
    if mean_e - mean_o > margin:
        return "better"
    if mean_o - mean_e > margin:
        return "worse"
    return "competitive"


def beats_random(finals: list[float], random_return: Optional[float]) -> bool:
    """Whether final returns clearly beat the random policy: their mean is above the random
    return by more than two standard errors and by 5% of the larger magnitude (so that a
    near-deterministic env with tiny standard errors does not count a hair's gain)."""
    if random_return is None:
        return False
    mean, se = results.mean_se(finals)
    return mean - random_return > max(2 * se, 0.05 * max(abs(mean), abs(random_return)), 1e-8)


@dataclasses.dataclass
class Overview:
    """All envs of a comparison at once: ``table`` (markdown lines, one row per env),
    ``verdicts`` (env -> EGGROLL vs OpenES, for envs with both), ``unlearned`` (envs where no
    algorithm clearly beat the random policy), ``pending`` (env -> algorithms not run yet),
    ``skipped`` ("env (why)") and ``speedups`` (EGGROLL's steps/s over OpenES's, per env)."""

    table: list[str]
    verdicts: dict[str, str]
    unlearned: list[str]
    pending: dict[str, list[str]]
    skipped: list[str]
    speedups: list[float]


def overview(rows: list[dict], meta: dict) -> Overview:
    """The per-env table and the counts, from results.csv rows and meta.json."""
    grouped = results.pairs(rows)
    out = Overview([
        "| env | budget (steps/seed) | EGGROLL | OpenES | PPO | EGGROLL vs OpenES | "
        "EGGROLL PPO-normalised | steps/s EGGROLL / OpenES / PPO |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ], {}, [], {}, [], [])
    for env_id, info in meta.get("envs", {}).items():
        if info.get("skipped"):
            out.skipped.append(f"{env_id} ({info['skipped'].splitlines()[0]})")
            continue
        pairs = grouped.get(env_id, {})
        if not pairs:
            continue
        finals = {algo: final_returns(r) for algo, r in pairs.items()}
        missing = [a for a in results.ALGOS if a not in finals]
        if missing:
            out.pending[env_id] = missing
        cells = []
        for algo in results.ALGOS:
            if algo in finals:
                mean, se = results.mean_se(finals[algo])
                cells.append(f"{mean:.4g} ± {se:.2g}")
            else:
                cells.append("-")
        compared = "-"
        if "eggroll" in finals and "openes" in finals:
            compared = out.verdicts[env_id] = verdict(finals["eggroll"], finals["openes"])
            out.speedups.append(_speed(pairs["eggroll"]) / _speed(pairs["openes"]))
        norm = "-"
        if "eggroll" in finals:
            ppo = results.mean_se(finals["ppo"]) if "ppo" in finals else None
            norm = normalised(results.mean_se(finals["eggroll"])[0], ppo, info.get("random_return"))
        if "random_return" in info and not any(
            beats_random(f, info["random_return"]) for f in finals.values()
        ):
            out.unlearned.append(env_id)
        speeds = " / ".join(
            f"{_speed(pairs[a]):,.0f}" if a in pairs else "-" for a in results.ALGOS
        )
        out.table.append(
            f"| {env_id} | {info.get('total_steps', 0):,} | {' | '.join(cells)} | {compared} "
            f"| {norm} | {speeds} |"
        )
    return out


def readme_block(rows: list[dict], meta: dict, folder: str) -> str:
    """The README's results section: the counts against the paper's, which env falls where,
    the figure, and a link to the per-env table in ``folder``/summary.md (``folder``: the
    result folder's path relative to the README).

    Its length does not grow with the number of envs (only its lists do), so the README stays
    short however many tasks a suite holds. Generated from results.csv and meta.json only, so
    the README cannot drift from the files.
    """
    view = overview(rows, meta)
    lines = [
        f"`{meta.get('command', '')}` on {meta.get('cores', '?')} cores ({meta.get('cpu', '?')}), "
        f"JAX {meta.get('jax', '?')}, {meta.get('date', '')[:10]}, commit "
        f"`{(meta.get('git_commit') or '?')[:10]}`. Final eval return of the mean policy, mean ± "
        f"s.e. over seeds, per env with its budget and speeds: [`summary.md`]({folder}/summary.md).",
        "",
    ]
    by_class = {
        c: [e for e, v in view.verdicts.items() if v == c] for c in ("better", "competitive", "worse")
    }
    n = len(view.verdicts)
    if n:
        lines += [
            "| EGGROLL vs OpenES | better | competitive | worse |",
            "| --- | --- | --- | --- |",
            f"| here ({n} envs) | {len(by_class['better'])} | {len(by_class['competitive'])} "
            f"| {len(by_class['worse'])} |",
            "| the paper (16 envs) | 7 | 7 | 2 |",
            "",
            "Better or worse: means more than two standard errors of their difference apart. "
            + " ".join(
                f"{c.capitalize()} here: {', '.join(envs)}." for c, envs in by_class.items() if envs
            )
            + (
                f" EGGROLL's training steps/s were {min(view.speedups):.2g}x to "
                f"{max(view.speedups):.2g}x OpenES's on the same env and policy."
                if view.speedups else ""
            )
            + (
                " No algorithm clearly beat the random policy (mean more than two standard "
                f"errors and 5% above it) on {', '.join(view.unlearned)}." if view.unlearned else ""
            )
            + (
                " Still to run: "
                + "; ".join(f"{e} ({', '.join(a)})" for e, a in view.pending.items()) + "."
                if view.pending else ""
            ),
            "",
        ]
    lines.append(f"![learning curves]({folder}/curves.png)")
    if view.skipped:
        lines += ["", "Skipped: " + "; ".join(view.skipped) + "."]
    return "\n".join(lines) + "\n"


def replace_marked(text: str, name: str, block: str) -> str:
    """``text`` with the part between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected one '{start}' followed by one '{end}' in the file.")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{block}{end}{tail}"


def main(argv=None) -> None:
    """``eggroll-rl report DIR [--readme README.md]``: regenerate DIR/summary.md, and print the
    README block (or write it into a README)."""
    import argparse
    import json
    import pathlib

    parser = argparse.ArgumentParser(
        prog="eggroll-rl report",
        description="Regenerate a compare result folder's summary.md (per-env table and "
        "sections) and its README section (counts against the paper, figure), both from its "
        "results.csv and meta.json.",
    )
    parser.add_argument("dir", type=pathlib.Path, help="a folder written by `eggroll-rl compare`")
    parser.add_argument(
        "--readme", type=pathlib.Path,
        help="write the block between '<!-- results:DIRNAME:start/end -->' markers in this file",
    )
    args = parser.parse_args(argv)
    rows = results.read(args.dir / "results.csv")
    meta_path = args.dir / "meta.json"
    if not rows or not meta_path.exists():
        parser.error(f"{args.dir} holds no results.csv rows or no meta.json.")
    meta = json.loads(meta_path.read_text())
    (args.dir / "summary.md").write_text(summary(rows, meta))
    if args.readme is None:
        print(readme_block(rows, meta, args.dir.as_posix()), end="")
        return
    folder = args.dir.resolve().relative_to(args.readme.resolve().parent)
    block = readme_block(rows, meta, folder.as_posix())
    args.readme.write_text(replace_marked(args.readme.read_text(), f"results:{args.dir.name}", block))
    print(f"updated {args.readme} and {args.dir / 'summary.md'}")
