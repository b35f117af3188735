"""``python -m pixvcs``: the command line."""

from .cli import main

main()
