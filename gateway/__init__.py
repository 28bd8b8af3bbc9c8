"""The gateway: the farm's public HTTP front door (auth, credit, routing to orchestrators)."""

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(name)
