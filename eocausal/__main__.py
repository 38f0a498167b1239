"""``python -m eocausal`` runs the command line."""

from eocausal.cli import main

main()
