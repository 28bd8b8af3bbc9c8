"""The orchestrator's node API (default port 8935)."""

from farm.node.app import create_node_app

__all__ = ["create_node_app"]
