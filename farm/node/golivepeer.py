"""go-livepeer transcoders and gateways on the node API's port: the gRPC mount, the bridge
that feeds attached transcoders from the cluster's queues, and their results route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from farm.settings import NodeSettings

__all__ = ["with_golivepeer"]


def with_golivepeer(app: FastAPI, settings: NodeSettings) -> Any:
    """The node API ``app`` with go-livepeer transcoders attached on the same port.

    Their orchSecret is the cluster's ``secret``, as for ``farm transcoder``. Serve the result
    over TLS with an HTTP/2 server that supports ASGI trailers (hypercorn, farm.node.serve).
    With ``settings.golivepeer`` off, gRPC calls are answered UNIMPLEMENTED, as go-livepeer
    answers when it takes no remote transcoders.
    """
    from farm.golivepeer.bridge import Bridge
    from farm.golivepeer.hub import Hub
    from farm.golivepeer.records import TranscoderRecords
    from farm.golivepeer.results import install
    from farm.node.grpc_mount import GrpcMount

    orchestrator = getattr(app.state, "orchestrator", None)  # a gateway's net.Orchestrator calls
    if not settings.golivepeer:
        return GrpcMount(app, Hub(), None, orchestrator=orchestrator)
    records = TranscoderRecords(settings.redis_registry_url())
    hub = Hub(records=records)
    app.state.golivepeer_hub = hub  # /status lists them
    secret = settings.secret.get_secret_value()
    install(app, hub, secret, settings.max_blob_bytes)

    @app.get("/golivepeer/transcoders")
    def transcoders() -> dict[str, Any]:
        """Attached go-livepeer transcoders (address, capacity, load, tasks done, pixels), and
        the segments and pixels each host has ever done for the cluster."""
        return {
            "capacity": hub.capacity(),
            "load": hub.load(),
            "transcoders": hub.transcoders(),
            "totals": records.totals(),
        }

    bridge = Bridge(settings, hub, getattr(app.state, "celery_app", None))

    def shutdown() -> None:
        bridge.stop()
        hub.close()
        records.close()

    return GrpcMount(
        app,
        hub,
        secret,
        on_startup=bridge.start,
        on_shutdown=shutdown,
        orchestrator=orchestrator,
    )
