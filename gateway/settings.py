"""``farm gateway`` settings: one class, ``FARM_*`` variables and config.json like the farm's."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from farm.client import MIN_TIMEOUT_S
from farm.runtime import (
    DEV_SECRET,
    ChainSettings,
    EnvironmentSettings,
    FetchSettings,
    redact_url,
)
from gateway.ai.pricing import CapabilityPrices

__all__ = ["GatewaySettings", "OrchestratorConfig"]


class OrchestratorConfig(BaseModel):
    """One orchestrator the gateway routes to, and the price charged to API keys for it.

    ``kind`` "cluster" (the default) is a farm cluster the gateway publishes jobs to directly
    (its broker, database and blob store); "livepeer" is any orchestrator speaking go-livepeer's
    network protocol at ``address`` (GetOrchestrator, ``POST /segment``, tickets), with no
    credentials of the orchestrator's.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["cluster", "livepeer"] = "cluster"
    region: str = "local"
    #: livepeer kind: the orchestrator's service address, https://host:8935.
    address: str | None = Field(None, pattern=r"^https?://[^/\s]+$")
    #: livepeer kind: found on chain (not configured).
    discovered: bool = False
    #: livepeer kind: the SHA-256 fingerprint of its certificate; without it any certificate
    #: is accepted, as go-livepeer's gateway does (orchestrators' certificates are self-signed).
    cert_fingerprint: str | None = None
    #: cluster kind: the cluster's node API, probed for /healthz and /status.
    node_url: str = ""
    #: For an https node_url: the SHA-256 fingerprint of the node's certificate (``farm
    #: transcoders fingerprint``), or a CA file (the node's certificate will do); without
    #: either, the system's CAs.
    node_cert_fingerprint: str | None = None
    node_ca: str | None = None
    #: Livepeer's price: pricePerUnit credits per pixelsPerUnit encoded pixels.
    price_per_unit: int = Field(0, ge=0)
    pixels_per_unit: int = Field(1, ge=1)
    #: How the gateway reaches the cluster (farm.client.ClusterSettings fields).
    broker_url: str = ""
    result_backend: str | None = None
    registry_url: str | None = None
    database_url: str = ""
    blob_url: str = ""

    @model_validator(mode="after")
    def _fields_of_kind(self) -> OrchestratorConfig:
        cluster = ("node_url", "broker_url", "database_url", "blob_url")
        if self.kind == "livepeer":
            if not self.address:
                raise ValueError(f"orchestrator {self.name}: a livepeer entry needs an address")
            given = [f for f in (*cluster, "result_backend", "registry_url") if getattr(self, f)]
            if given:
                raise ValueError(
                    f"orchestrator {self.name}: a livepeer entry holds no cluster credentials "
                    f"({', '.join(given)})"
                )
        else:
            missing = [f for f in cluster if not getattr(self, f)]
            if missing:
                raise ValueError(f"orchestrator {self.name}: missing {', '.join(missing)}")
        return self

    def cluster_fields(self) -> dict[str, Any]:
        return {
            "broker_url": self.broker_url,
            "result_backend": self.result_backend,
            "registry_url": self.registry_url,
            "database_url": self.database_url,
            "blob_url": self.blob_url,
        }

    def public(self) -> dict[str, Any]:
        if self.kind == "livepeer":
            return {
                "name": self.name,
                "kind": self.kind,
                "region": self.region,
                "address": self.address,
                "discovered": self.discovered,
                "price_per_unit": self.price_per_unit,
                "pixels_per_unit": self.pixels_per_unit,
            }
        return {
            "name": self.name,
            "kind": self.kind,
            "region": self.region,
            "node_url": self.node_url,
            "price_per_unit": self.price_per_unit,
            "pixels_per_unit": self.pixels_per_unit,
            "broker_url": redact_url(self.broker_url),
        }


class GatewaySettings(EnvironmentSettings, FetchSettings):
    """The gateway process."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(9935, ge=1, le=65535)
    #: Ledger, keys, sessions and tasks: postgresql+psycopg://… or sqlite:///…
    gateway_database_url: str = "sqlite:///.farm/gateway.db"
    #: Redis for rate limits and concurrency caps.
    gateway_redis_url: str = "redis://127.0.0.1:6379/0"
    #: Where Studio-style task outputs are kept: file://DIR (served by the gateway).
    gateway_blob_url: str = "file://.farm/gateway-blobs"
    admin_token: SecretStr = SecretStr(DEV_SECRET)
    #: Key of the signed playback URLs of task outputs (derived from admin_token when unset;
    #: replicas behind one address must share it).
    playback_secret: SecretStr | None = None
    #: How long a playback URL from GET /api/task/{id} stays valid.
    playback_ttl_s: int = Field(24 * 3600, ge=60, le=366 * 24 * 3600)
    #: The orchestrators, as a JSON list of OrchestratorConfig objects.
    orchestrators: list[OrchestratorConfig] = Field(default_factory=list)
    #: The gateway's region; orchestrators in it score higher.
    region: str = "local"
    probe_interval_s: float = Field(5.0, gt=0)
    probe_timeout_s: float = Field(2.0, gt=0)
    #: Attempts per segment, each on a different orchestrator, within the segment's deadline.
    max_attempts: int = Field(3, ge=1)
    #: Floor of one attempt's timeout, max(floor, 4 x duration) (go-livepeer: 8 s).
    attempt_timeout_floor_s: float = Field(MIN_TIMEOUT_S, gt=0)
    #: How long a failing orchestrator is left out (by time, not by refresh count).
    suspend_s: float = Field(30.0, ge=0)
    #: Added to the pixel estimate when reserving credit (go-livepeer uses 2 %).
    estimate_margin: float = Field(0.02, ge=0, le=1)
    rate_limit_per_minute: int = Field(600, ge=1)
    rate_burst: int = Field(60, ge=1)
    max_concurrent_jobs: int = Field(16, ge=1)
    max_concurrent_tasks: int = Field(5, ge=1)
    max_upload_bytes: int = Field(300 * 1024 * 1024, ge=1024)
    max_task_input_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1024)
    max_segment_seconds: float = Field(300.0, gt=0)
    #: The longest wait for the next part of a request body before the request is answered
    #: 408 (a client that declares a size and stalls).
    body_timeout_s: float = Field(30.0, gt=0)
    #: go-livepeer's -authWebhookUrl contract, with a timeout and a cache.
    auth_webhook_url: str | None = None
    auth_webhook_timeout_s: float = Field(3.0, gt=0)
    auth_webhook_cache_s: float = Field(60.0, ge=0)
    #: Profiles when a request names none (go-livepeer's default -transcodingOptions).
    default_profiles: str = "P240p30fps16x9,P360p30fps16x9"
    task_workers: int = Field(4, ge=1)
    #: ETH-deposit payment with Livepeer tickets: the chain's JSON-RPC URL (none: offline).
    eth_rpc_url: str | None = None
    #: The Livepeer Controller contract address, where the other contracts are looked up.
    eth_controller: str | None = None
    #: The address tickets are made out to (the gateway's, as recipient).
    eth_recipient: str | None = None
    #: Where winning tickets wait for redemption: the database the orchestrator cluster's
    #: chain worker redeems from (default: the one cluster orchestrator's database).
    ticket_queue_url: str | None = None
    #: 32 bytes hex: the recipient's secret for recipientRand (keep it across restarts to
    #: honour outstanding params); its default is refused outside development when ticket
    #: payments are on.
    ticket_secret: SecretStr = SecretStr("00" * 32)
    #: Price charged to ticket payers per encoded pixel, "numerator/denominator" wei.
    eth_price_per_pixel: str = "1200/1"
    ticket_ev_wei: int = Field(8_000_000_000, gt=0)
    redeem_gas: int = Field(1_200_000, gt=0)
    tx_cost_multiplier: int = Field(100, gt=0)
    #: go-livepeer's -maxFaceValue (0: no cap).
    ticket_max_face_value_wei: int = Field(0, ge=0)
    #: 32 bytes hex: the key that pays livepeer-kind orchestrators with tickets from its
    #: TicketBroker deposit, and signs GetOrchestrator and segments (needs FARM_ETH_RPC_URL;
    #: without it the gateway is off chain: empty payments, no signatures).
    eth_sender_key: SecretStr | None = None
    #: go-livepeer's -maxPricePerUnit / -pixelsPerUnit: livepeer-kind orchestrators quoting
    #: more wei per pixel are left out (0: no cap).
    max_price_per_unit: int = Field(0, ge=0)
    max_price_pixels_per_unit: int = Field(1, ge=1)
    #: A stream that sent no segment for this long has ended: its sessions at livepeer-kind
    #: orchestrators are ended (EndTranscodingSession; go-livepeer's orchestrators drop idle
    #: sessions after 70 s).
    livepeer_session_idle_s: float = Field(60.0, gt=0)
    #: Find livepeer-kind orchestrators on chain too: the BondingManager's active transcoders
    #: at their ServiceRegistry URIs (needs FARM_ETH_RPC_URL and FARM_ETH_CONTROLLER), every
    #: discovery_interval_s (go-livepeer: 25 min). Found ones (and the webhook's) are
    #: charged to API keys at discovery_price_per_unit/discovery_pixels_per_unit and placed in
    #: discovery_region.
    livepeer_discovery: bool = False
    discovery_interval_s: float = Field(1500.0, gt=0)
    #: go-livepeer's -orchWebhookUrl: a GET answering [{"address", "score"}], asked every
    #: minute; the trusted orchestrators (score >= 1) join the pool like those found on chain.
    orch_webhook_url: str | None = None
    discovery_price_per_unit: int = Field(0, ge=0)
    discovery_pixels_per_unit: int = Field(1, ge=1)
    discovery_region: str = "network"
    #: go-livepeer's -maxTicketEV: ticket params worth more per ticket are refused.
    max_ticket_ev_wei: int = Field(3_000_000_000_000, gt=0)
    #: Share of segments also transcoded on up to two more orchestrators and compared
    #: (go-livepeer's verificationFreq).
    verification_freq: float = Field(0.0, ge=0, le=1)
    #: Below this luma PSNR two orchestrators' pictures disagree.
    verification_min_psnr: float = Field(25.0, gt=0)

    #: AI prices per (pipeline, model) in go-livepeer's -maxPricePerCapability JSON shape,
    #: {"capabilities_prices": [{"pipeline", "model_id" | "default", "price_per_unit",
    #: "pixels_per_unit"}]}; credits per pixels_per_unit units (docs/ai.md).
    ai_prices: CapabilityPrices = Field(default_factory=CapabilityPrices)
    #: The price of AI work no entry of ai_prices covers (go-livepeer's -maxPricePerUnit).
    ai_price_per_unit: int = Field(0, ge=0)
    ai_pixels_per_unit: int = Field(1, ge=1)
    #: go-livepeer's -maxPricePerCapability for livepeer-kind orchestrators: wei per
    #: pixels_per_unit units they may quote per (pipeline, model), in ai_prices' shape
    #: ("default" for a pipeline's other models); those quoting more are left out (none
    #: listed: no cap).
    ai_max_prices: CapabilityPrices = Field(default_factory=CapabilityPrices)
    #: No new try of an AI request starts after this (go-livepeer's -aiProcessingRetryTimeout).
    ai_retry_timeout_s: float = Field(10.0, gt=0)
    #: Tries of one AI request, each on another orchestrator (go-livepeer: 20).
    ai_max_tries: int = Field(20, ge=1)
    #: How long one orchestrator may take to answer an AI request.
    ai_job_timeout_s: float = Field(300.0, gt=0)
    #: Threads running Prefer: respond-async image-to-video requests.
    ai_async_workers: int = Field(4, ge=1)

    @field_validator("ai_prices", "ai_max_prices", mode="before")
    @classmethod
    def _parse_prices(cls, v: Any) -> Any:
        v = json.loads(v) if isinstance(v, str) else v
        # A bare list of entries is accepted too.
        return {"capabilities_prices": v} if isinstance(v, list) else v

    @field_validator("orchestrators", mode="before")
    @classmethod
    def _parse_json(cls, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str) else v

    def chain(self) -> ChainSettings:
        """The chain the gateway reads (farm.chainconf.chain_client builds the client). It
        sends no transactions: its sender key signs tickets, never on-chain calls."""
        return ChainSettings(rpc_url=self.eth_rpc_url, controller=self.eth_controller)

    def secrets_in_use(self) -> dict[str, SecretStr]:
        used = super().secrets_in_use()
        if not self.eth_rpc_url:
            used.pop("ticket_secret", None)  # ticket payments are off
        return used

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if self.eth_sender_key is not None:
            key = self.eth_sender_key.get_secret_value().removeprefix("0x")
            if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
                raise ValueError("FARM_ETH_SENDER_KEY must be a 32-byte hex private key")
            if not (self.eth_rpc_url and self.eth_controller):
                raise ValueError(
                    "FARM_ETH_SENDER_KEY pays from a TicketBroker deposit: it needs "
                    "FARM_ETH_RPC_URL and FARM_ETH_CONTROLLER"
                )
        if self.livepeer_discovery and not (self.eth_rpc_url and self.eth_controller):
            raise ValueError(
                "FARM_LIVEPEER_DISCOVERY reads the chain: it needs FARM_ETH_RPC_URL and "
                "FARM_ETH_CONTROLLER"
            )
        names = [o.name for o in self.orchestrators]
        if len(names) != len(set(names)):
            raise ValueError("orchestrator names must be unique")
        return self
