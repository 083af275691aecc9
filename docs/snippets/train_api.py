"""Train EGGROLL on CartPole from Python, then use the policy (the README's API example)."""

import numpy as np

from eggroll_rl.agents import load, train

# Defaults come from the bundled preset, as in `eggroll-rl train`; stop once solved.
run = train("eggroll", "gymnax/CartPole-v1", stop_at=475, progress=False)
print(f"eval return {run.final()[0]:.1f} after {run.final('env_steps')[0]:,} env steps "
      f"({run.wall_s:.1f} s training + {run.compile_s:.1f} s compile)")

obs = np.array([0.0, 0.1, 0.02, -0.1], np.float32)  # cart position/velocity, pole angle/velocity
print("action:", run.act(obs))                      # a batch (N, 4) gives N actions

run.save("cartpole-policy")                          # a folder; load() reads it back
assert load("cartpole-policy").act(obs) == run.act(obs)
