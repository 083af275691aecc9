"""Trainers (``eggroll_rl.agents``) that join strategies and environments: EGGROLL, OpenES, PPO.
Not built yet: see the agents issue."""
