"""summary.md of a comparison: final returns, PPO-normalised scores, speed, time to threshold.

Scores follow the paper in normalising by PPO, here as ``(R - R_random) / (R_PPO - R_random)``
so that 0 is a random policy and 1 is PPO on every env, negative returns included. Where PPO
is no better than random (its mean within two standard errors, or 1%, of the random return)
the ratio would only amplify noise, so the summary says so instead of dividing.
"""

from __future__ import annotations

from typing import Optional

from eggroll_rl.experiments import results


def final_returns(rows: list[dict]) -> list[float]:
    """Each seed's eval return at its last eval point."""
    last: dict[int, dict] = {}
    for row in rows:
        if row["seed"] not in last or row["iteration"] >= last[row["seed"]]["iteration"]:
            last[row["seed"]] = row
    return [last[seed]["eval_return"] for seed in sorted(last)]


def normalised(
    value: float, ppo: Optional[tuple[float, float]], random_return: Optional[float]
) -> str:
    if ppo is None:
        return "no PPO run"
    if random_return is None:
        return "no random baseline"
    ppo_mean, ppo_se = ppo
    gap = ppo_mean - random_return
    if gap <= max(2 * ppo_se, 0.01 * max(abs(ppo_mean), abs(random_return)), 1e-8):
        return f"PPO near random ({ppo_mean:.4g} vs {random_return:.4g}): not normalised"
    return f"{(value - random_return) / gap:.2f}"


def threshold_time(rows: list[dict], threshold: Optional[float]) -> str:
    if threshold is None:
        return "no threshold"
    for point in results.curve(rows):
        if point["mean"] >= threshold:
            return f"{point['env_steps']:,.0f} steps / {point['wall_s']:.1f} s"
    return "not reached"


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
        last_rows = [r for r in rows if r["iteration"] == last["iteration"]]
        steps = sum(r["env_steps"] for r in last_rows)
        speed = steps / last["wall_s"] if last["wall_s"] > 0 else float("nan")
        compile_s = algo_info.get("compile_s")
        lines.append(
            f"| {algo} | {mean:.4g} ± {se:.2g} | {len(finals)} | {normalised(mean, ppo, random_return)} "
            f"| {speed:,.0f} | {last['wall_s']:.1f} | "
            f"{'-' if compile_s is None else f'{compile_s:.1f}'} | {threshold_time(rows, threshold)} |"
        )
    return "\n".join(lines + [""])


def summary(rows: list[dict], meta: dict) -> str:
    """The whole summary.md: run metadata, then one section per env (skipped envs included)."""
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
    ]
    grouped = results.pairs(rows)
    sections = []
    for env_id, info in meta.get("envs", {}).items():
        if env_id in grouped or info.get("skipped"):
            sections.append(env_section(env_id, grouped.get(env_id, {}), info))
    return "\n".join(head + sections)
