"""``python -m nndk`` runs the nndk command line."""

from nndk.cli import main

main()
