"""``python -m eggroll_rl.cli``: the same as the ``eggroll-rl`` command."""

from eggroll_rl.cli import main

main()
