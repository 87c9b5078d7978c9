"""Shipped equation files: ``lstm``, ``gru``, ``rnn`` and ``mlp``, usable by name."""
