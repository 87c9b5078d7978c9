"""``python -m nnre`` runs the nnre command line."""

from nnre.cli import main

main()
