"""The ``farm`` command: the one composition root of the project."""

from farm.cli.main import cli, main

__all__ = ["cli", "main"]
