"""nndk: the SDK that checks, trains and packs equation models for the nnre runtime."""

__version__ = "0.1.0"
