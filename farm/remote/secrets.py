"""The orchSecret: given on the command line, or as the path of a file that holds it.

go-livepeer accepts either (``common/readfromfile.go``) and falls back to the text itself when
no such file exists, so a mistyped path becomes the secret. Here a value that looks like a path
(it holds a ``/``, or starts with ``.`` or ``~``) must name a readable file.
"""

from __future__ import annotations

from pathlib import Path

from farm.errors import ConfigError

__all__ = ["read_secret"]


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.startswith((".", "~"))


def read_secret(value: str) -> str:
    """The secret ``value`` holds or names; ConfigError for a missing file or an empty secret."""
    secret = value
    if _looks_like_path(value):
        path = Path(value).expanduser()
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"orchSecret file {path} does not exist") from None
        except OSError as e:
            raise ConfigError(f"cannot read orchSecret file {path}: {e.strerror}") from e
    if not secret.strip():
        raise ConfigError("the orchSecret is empty")
    return secret.strip()
