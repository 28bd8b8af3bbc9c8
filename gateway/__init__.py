"""The gateway: the farm's public HTTP front door (auth, credit, routing to orchestrators)."""

__all__: list[str] = []
