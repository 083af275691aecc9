"""int8 vs float32 EGGROLL: final return, env steps and wall-clock (compile included) per env,
and the int8 population-forward throughput case of ``eggroll-rl bench``.

Each run is one seed through the shared train loop (``agents.loop.run``), evaluated every
5 generations on 10 fresh episodes with the deterministic mean policy. The float32 side uses
the project's float EGGROLL settings (3x256 MLP with LayerNorm; the gymnax presets' ES values,
``ESConfig`` defaults for Acrobot), and again at the int8 net's size (2x64, no LayerNorm,
population 64); the int8 side ``Int8ESConfig`` defaults. Budgets are equal per env. Writes ``experiments/results/int8_vs_float.json`` and ``.md``.

    python experiments/int8_vs_float.py            # the measurements in the results files
    python experiments/int8_vs_float.py --quick    # a smoke run with tiny budgets
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax

from eggroll_rl import envs
from eggroll_rl.bench import suite as bench
from eggroll_rl.agents.es import ESConfig, ESTrainer
from eggroll_rl.agents.int8_es import Int8ESConfig, Int8ESTrainer
from eggroll_rl.agents.loop import LoopConfig, run

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"  # a study in the repo, not installed

# env id -> (threshold, {variant: (dtype, config fields)}); budgets included. "float32" is the
# project's float EGGROLL (3x256 MLP with LayerNorm), "float32-2x64" the int8 net's widths
# (no LayerNorm, the int8 population size) in float32, "int8" Int8ESConfig's defaults.
SAME_SIZE = dict(population_size=64, hidden=(64, 64), layer_norm=False, lr=0.05, sigma=0.05)
RUNS = {
    "gymnax/CartPole-v1": (
        475.0,
        {
            "float32": ("float32", dict(total_steps=1_000_000, population_size=128, lr=0.05, sigma=0.05)),
            "float32-2x64": ("float32", dict(total_steps=1_000_000, **SAME_SIZE)),
            "int8": ("int8", dict(total_steps=1_000_000)),
        },
    ),
    "gymnax/Acrobot-v1": (
        -100.0,
        {
            "float32": ("float32", dict(total_steps=1_000_000)),
            "float32-2x64": ("float32", dict(total_steps=1_000_000, **SAME_SIZE)),
            "int8": ("int8", dict(total_steps=1_000_000)),
        },
    ),
    "gymnax/Pendulum-v1": (
        -200.0,
        {
            "float32": ("float32", dict(total_steps=1_500_000, population_size=512, lr=0.01, sigma=0.05)),
            "float32-2x64": ("float32", dict(total_steps=1_500_000, **SAME_SIZE)),
            "int8": ("int8", dict(total_steps=1_500_000)),
            # coarser weights (std 4), so each +-1 step is a larger relative move
            "int8-w4": ("int8", dict(total_steps=1_500_000, weight_init=4, noise_shift=8, alpha=0.3)),
        },
    ),
}


def measure(env_id: str, variant: str, kind: str, fields: dict, threshold: float, seed: int) -> dict:
    task = envs.make(env_id)
    if kind == "int8":
        config = Int8ESConfig(**fields)
        trainer = Int8ESTrainer(task, config)
    else:
        config = ESConfig(**fields)
        trainer = ESTrainer(task, config)
    loop = LoopConfig(total_steps=config.total_steps, iterations_per_chunk=5, seeds=(seed,),
                      progress=False)
    start = time.perf_counter()
    result = run(trainer, loop)
    total_s = time.perf_counter() - start
    rows = result.rows
    solved = next((row for row in rows if row["eval_return"] >= threshold), None)
    return {
        "env": env_id,
        "variant": variant,
        "kind": kind,
        "seed": seed,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in config.__dict__.items()},
        "final_eval_return": rows[-1]["eval_return"],
        "best_eval_return": max(row["eval_return"] for row in rows),
        "env_steps": rows[-1]["env_steps"],
        "threshold": threshold,
        "env_steps_to_threshold": solved["env_steps"] if solved else None,
        "train_s_to_threshold": solved["wall_s"] if solved else None,
        "generations": rows[-1]["iteration"],
        "compile_s": round(result.compile_s, 2),
        "train_s": round(result.wall_s, 2),
        "wall_s_incl_compile": round(total_s, 2),
        "curve": [(row["env_steps"], round(row["eval_return"], 1)) for row in rows],
    }


def markdown(report: dict) -> str:
    lines = [
        "# int8 vs float32 EGGROLL",
        "",
        f"{report['machine']}, jax {report['jax']}, backend {report['backend']}; one seed per run, "
        "eval = mean return of the mean policy on 10 fresh episodes. Produced by "
        "`python experiments/int8_vs_float.py`.",
        "",
        "| env | variant | final eval | best eval | env steps | steps to threshold | "
        "compile s | train s | total s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        to = r["env_steps_to_threshold"]
        reached = f"{to:,}" if to else "not reached"
        lines.append(
            f"| {r['env']} | {r['variant']} | {r['final_eval_return']:.1f} | "
            f"{r['best_eval_return']:.1f} | {r['env_steps']:,} | "
            f"{reached} (>= {r['threshold']:g}) | "
            f"{r['compile_s']:.1f} | {r['train_s']:.1f} | {r['wall_s_incl_compile']:.1f} |"
        )
    b = report.get("bench")
    if b:
        rates = b["member_steps_per_s"]
        lines += [
            "",
            f"Bench `{b['case']}` (hidden {b['hidden']}, N={b['population_size']}, rank "
            f"{b['rank']}): population forward member-steps/s int8 {rates['int8_eggroll']:.3g}, "
            f"float32 {rates['float32_eggroll']:.3g} (int8/float32 speed "
            f"{b['int8_vs_float32']:.2f}); int8 mean inference {rates['int8_inference']:.3g}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", help="only these env ids (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench-scale", type=float, default=0.25)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "int8_vs_float")
    args = parser.parse_args(argv)
    report = {
        "machine": f"{platform.machine()} x{jax.local_device_count()} {jax.devices()[0].device_kind}",
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "runs": [],
    }
    for env_id, (threshold, variants) in RUNS.items():
        if args.env and env_id not in args.env:
            continue
        for variant, (kind, fields) in variants.items():
            if args.quick:
                fields = {**fields, "total_steps": 20_000}
            result = measure(env_id, variant, kind, fields, threshold, args.seed)
            print(
                f"{env_id} {variant}: final {result['final_eval_return']:.1f} after "
                f"{result['env_steps']:,} steps; {result['compile_s']:.1f}s compile + "
                f"{result['train_s']:.1f}s train", flush=True,
            )
            report["runs"].append(result)
    scale = 0.02 if args.quick else args.bench_scale
    case = next(c for c in bench.default_cases(scale) if isinstance(c, bench.Int8Case))
    report["bench"] = bench.run_int8_case(case, repeats=3)
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
