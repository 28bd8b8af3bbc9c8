"""Livepeer-compatible AI requests at the gateway: fields, pricing, dispatch, results."""

__all__: list[str] = []
