"""The gateway's HTTP routes."""

__all__: list[str] = []
