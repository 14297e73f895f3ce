"""``python -m ranker.cli``: the same as the ``ranker`` command."""

from ranker.cli import main

main()
