"""Livepeer-compatible AI requests at the gateway: fields, pricing, sending, results."""

__all__: list[str] = []
