"""A run killed with SIGKILL mid-training and resumed ends bit-identical to an uninterrupted one."""

from cli_runs import cached_env, checkpoint_steps, kill_after_checkpoints, train_process

ARGS = [
    "--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--total-steps", "4000",
    "--population-size", "16", "--hidden", "8", "8", "--iterations-per-chunk", "1",
    "--checkpoint-every", "1", "--no-progress",
]


def _train(cache, *extra, wait=True):
    return train_process([*ARGS, *extra], cached_env(cache), wait=wait)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cache = tmp_path / "jax-cache"
    _train(cache, "--out", str(straight))

    process = _train(cache, "--out", str(killed), wait=False)
    kill_after_checkpoints(process, killed)
    assert 2 <= max(checkpoint_steps(killed)) < max(checkpoint_steps(straight))

    train_process(["--resume", str(killed), "--no-progress"], cached_env(cache))
    assert (killed / "policy" / "params.msgpack").read_bytes() == (
        straight / "policy" / "params.msgpack"
    ).read_bytes()
    rows = lambda d: (d / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in __import__("json").loads(line).items() if k != "wall_s"}
    assert [strip(r) for r in rows(killed)] == [strip(r) for r in rows(straight)]

    # the export is what the Gymnasium playback helper loads and plays
    from eggroll_rl.envs.playback import load_policy, play

    assert load_policy(straight / "policy").env_id == "gymnax/CartPole-v1"
    returns = play(straight / "policy", "CartPole-v1", episodes=2, seed=0, max_steps=50)
    assert len(returns) == 2 and all(1 <= r <= 50 for r in returns)

