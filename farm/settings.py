"""Settings, one class per process type, from ``FARM_*`` variables and an optional config.json.

Precedence: explicit arguments, then environment variables, then the JSON file named by
``FARM_CONFIG`` (default ``./config.json`` when it exists), then the defaults here. Secrets are
``SecretStr`` so they never show in logs or reprs, and a default secret is refused outside
development.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from farm.chainconf import ChainSettings
from farm.queues import golivepeer_queue_error

if TYPE_CHECKING:
    from farm.fetch import FetchPolicy

__all__ = [
    "DEV_SECRET",
    "MIN_SECRET_LENGTH",
    "AIRunnerSettings",
    "ClusterSettings",
    "EnvironmentSettings",
    "ExporterSettings",
    "FarmBaseSettings",
    "FetchSettings",
    "FlowerSettings",
    "MachineSettings",
    "NodeSettings",
    "StatusSettings",
    "TranscoderSettings",
    "UpSettings",
    "WorkerSettings",
    "redact_url",
    "weak_secret",
]

#: The development secret; refused when ``FARM_ENVIRONMENT`` is not ``development``.
DEV_SECRET = "farm-dev-secret"
#: Outside development a secret must be at least this long and no placeholder.
MIN_SECRET_LENGTH = 12
_PLACEHOLDERS = frozenset(
    {"changeme", "change", "secret", "password", "passwd", "admin", "default", "example", "test"}
)


def weak_secret(value: str) -> str | None:
    """Why ``value`` is no secret to run a production farm with (None when it will do).

    For ``user:password`` values (Flower's basic auth) the password is what is judged.
    """
    judged = value.split(":", 1)[1] if ":" in value else value
    plain = "".join(c for c in judged.lower() if c.isalnum())
    if DEV_SECRET in value:
        return "it is the development secret"
    if plain in _PLACEHOLDERS or plain.rstrip("0123456789") in _PLACEHOLDERS or not plain:
        return "it is a placeholder"
    if len(judged) < MIN_SECRET_LENGTH:
        return f"it is shorter than {MIN_SECRET_LENGTH} characters"
    return None


def _config_file() -> Path | None:
    # The file the settings are read from is named before any of them exists: the one
    # variable read here directly.
    named = os.environ.get("FARM_CONFIG")
    if named:
        return Path(named)
    default = Path("config.json")
    return default if default.is_file() else None


def redact_url(url: str) -> str:
    """A URL with its password replaced, for logs and status pages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


class FarmBaseSettings(BaseSettings):
    """Common source order and options for every settings class of the project."""

    model_config = SettingsConfigDict(
        env_prefix="FARM_", env_ignore_empty=True, extra="ignore", validate_default=True
    )

    def secrets_in_use(self) -> dict[str, SecretStr]:
        """The secrets these settings use, by field name: every secret that is set (a class
        drops those its configuration leaves unused)."""
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
        }

    @model_validator(mode="after")
    def _no_weak_secrets(self) -> Any:
        # The one check of every process's secrets: outside development, no default,
        # placeholder (the example files' change-me) or short secret starts a service.
        if getattr(self, "environment", "development") == "development":
            return self
        fields = type(self).model_fields
        for name, secret in self.secrets_in_use().items():
            value = secret.get_secret_value()
            default = fields[name].default
            why = weak_secret(value)
            if (
                why is None
                and isinstance(default, SecretStr)
                and default.get_secret_value() == value
            ):
                why = "it is the default"  # a default that passes for strong (FARM_TICKET_SECRET)
            if why is not None:
                raise ValueError(
                    f"FARM_{name.upper()} must be set to a real secret outside development: {why}"
                )
        return self

    def __repr_args__(self) -> Any:
        # URLs carry passwords; a repr ends up in logs and tracebacks.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=path))
        return tuple(sources)


class EnvironmentSettings(FarmBaseSettings):
    """The deployment's kind: outside development, weak secrets are refused."""

    environment: Literal["development", "production"] = "development"


class FetchSettings(FarmBaseSettings):
    """For processes that fetch URLs on a caller's behalf (task inputs, AI result media)."""

    #: Networks (CIDR) and host names that URLs fetched for callers (task inputs, AI result
    #: media) may reach although they are not public: the operator's own storage.
    #: Comma-separated; see farm.fetch.
    fetch_allow: str = ""

    @field_validator("fetch_allow")
    @classmethod
    def _fetch_allow_parses(cls, v: str) -> str:
        from farm.fetch import FetchPolicy

        FetchPolicy.parse(v.split(","))
        return v

    def fetch_policy(self) -> FetchPolicy:
        """The policy for URLs fetched on a caller's behalf (``fetch_allow``)."""
        from farm.fetch import FetchPolicy

        return FetchPolicy.parse(self.fetch_allow.split(","))


class MachineSettings(FarmBaseSettings):
    """What a worker process runs with on its own machine: its GPUs, codecs, Celery pool and
    name (a cluster worker and a remote transcoder alike)."""

    gpus: str = "all"
    #: Renditions in flight per NVENC session limit, see farm.gpu.
    codecs: tuple[str, ...] = ("h264", "hevc", "av1")
    #: Celery pool: prefork isolates each transcode in a child process and enforces hard time
    #: limits; threads and solo run transcodes in the worker process (lower latency, no
    #: hard limit: the engine's own deadline still applies).
    pool: Literal["prefork", "threads", "solo"] = "prefork"
    hostname: str | None = None
    #: GPUs declared by hand as a JSON list of farm.gpu.GpuInfo fields, used instead of NVML
    #: (machines whose driver NVML cannot read, and tests of multi-GPU workers).
    static_gpus: str | None = None


class ClusterSettings(EnvironmentSettings, FetchSettings):
    """What every process of one orchestrator cluster shares."""

    #: Celery broker: redis://, rediss://, redis+socket:// or amqp://.
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: Celery result backend; defaults to the broker when that is Redis.
    result_backend: str | None = None
    #: Where workers heartbeat their capabilities (Redis); defaults to a Redis broker/backend.
    registry_url: str | None = None
    #: Job table: postgresql+psycopg://… in production, sqlite:///… embedded.
    database_url: str = "sqlite:///.farm/farm.db"
    #: Blob store for segments and renditions: file://DIR, redis://…?ttl=S, s3://bucket/prefix.
    blob_url: str = "file://.farm/blobs"
    #: Shared secret for remote transcoders and signed blob URLs.
    secret: SecretStr = SecretStr(DEV_SECRET)
    region: str = "local"
    #: Seconds between worker heartbeats; a worker is dead after 3 missed beats.
    heartbeat_s: float = Field(2.0, gt=0)
    #: Seconds between reconciler passes.
    reconcile_s: float = Field(5.0, gt=0)
    #: Seconds the single beat's lock (in the registry's Redis) outlives its last renewal: a
    #: second ``farm beat`` takes over this long after the first dies.
    beat_lock_s: float = Field(15.0, ge=1)
    #: Seconds a published job may wait in its queue before the reconciler republishes it
    #: (a broker that restarted without persistence lost it).
    queued_timeout_s: float = Field(60.0, gt=0)
    #: Workers send task events (Flower's task views need them; each costs a publish).
    task_events: bool = True
    #: The chain (off-chain when unset): JSON-RPC URL, Livepeer Controller address, and the
    #: orchestrator's key that signs redemptions and reward calls.
    eth_rpc_url: str | None = None
    eth_controller: str | None = None
    eth_private_key: SecretStr | None = None
    max_gas_price_wei: int | None = Field(None, gt=0)
    #: Where winning tickets wait for redemption (default: the job database).
    ticket_queue_url: str | None = None
    redeem_interval_s: float = Field(60.0, gt=0)
    reward_interval_s: float = Field(300.0, gt=0)
    #: chain.reward also initializes a round nobody has initialized (go-livepeer's
    #: -initializeRound); it costs gas, so one orchestrator in a network is enough.
    initialize_rounds: bool = False
    #: Verify every rendition before a job is done (farm.media.verify).
    verify_renditions: bool = True
    #: Attempts per job before it fails for good (a redelivery after a crash counts).
    max_attempts: int = Field(3, ge=1)
    #: Seconds an overdue job may wait for a live worker that can take it before it fails
    #: with no_capacity; waiting is not an attempt (workers restarting, a GPU host rebooting).
    capacity_wait_s: float = Field(600.0, gt=0)
    #: Seconds one attempt of an AI job may run (the runner request's timeout).
    ai_timeout_s: float = Field(300.0, gt=0)
    #: The most media bytes one AI result may hold (the runner's files, all together).
    ai_max_result_bytes: int = Field(512 * 1024 * 1024, gt=0)

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, v: str) -> str:
        if not v.startswith(
            ("redis://", "rediss://", "redis+socket://", "amqp://", "amqps://", "memory://")
        ):
            raise ValueError(f"unsupported broker URL scheme in {redact_url(v)!r}")
        return v

    @model_validator(mode="after")
    def _derive(self) -> ClusterSettings:
        redis_like = ("redis://", "rediss://", "redis+socket://")
        if self.result_backend is None and self.broker_url.startswith(redis_like):
            self.result_backend = self.broker_url
        if self.registry_url is None:
            for candidate in (self.broker_url, self.result_backend or ""):
                if candidate.startswith(redis_like):
                    self.registry_url = candidate
                    break
        return self

    def redis_registry_url(self) -> str:
        """The Redis URL for the capability registry, or ConfigError when there is none."""
        from farm.errors import ConfigError

        if not self.registry_url:
            raise ConfigError(
                "no Redis for the capability registry: set FARM_REGISTRY_URL or use a Redis "
                "broker or result backend"
            )
        return self.registry_url

    def chain(self) -> ChainSettings:
        """The chain this cluster's processes talk to (farm.chainconf.chain_client builds
        the client), signing with the orchestrator's key."""
        return ChainSettings(
            rpc_url=self.eth_rpc_url,
            controller=self.eth_controller,
            private_key=self.eth_private_key,
            max_gas_price_wei=self.max_gas_price_wei,
        )

    def ticket_queue_database(self) -> str:
        """Where the cluster's winning tickets wait for ``chain.redeem``: every door that
        receives tickets (the node's ``/segment``, a gateway in front of this cluster) writes
        there, and the redeemer reads there."""
        return self.ticket_queue_url or self.database_url

    def public(self) -> dict[str, Any]:
        """Settings safe to show: URLs redacted, secrets hidden."""
        data = self.model_dump(exclude={"secret"})
        for key, value in data.items():
            if isinstance(value, str) and "://" in value:
                data[key] = redact_url(value)
        return data


class WorkerSettings(MachineSettings, ClusterSettings):
    """``farm worker``: one Celery worker process."""

    concurrency: int | None = Field(None, ge=1)
    #: Also consume CPU queues on a GPU worker.
    gpu_takes_cpu_jobs: bool = False
    #: Also consume the chain queue (redemption and reward run on exactly one worker).
    chain_queue: bool = False
    #: AI models in go-livepeer's ``-aiModels`` shape, a JSON list or the path of a file
    #: holding one (farm.ai.config). A worker with AI models is an AI worker: it consumes the
    #: ``ai.<pipeline>`` queues of its models instead of transcode queues.
    ai_models: str | None = None
    #: Seconds between AI runner health probes, and each probe's timeout (go-livepeer: 5, 5).
    ai_probe_s: float = Field(5.0, gt=0)
    ai_probe_timeout_s: float = Field(5.0, gt=0)
    #: Seconds a runner may answer LOADING before that counts as a failed probe.
    ai_loading_timeout_s: float = Field(180.0, gt=0)
    #: Keep a stream's encoders open between its segments where they can (zero-delay
    #: libx264/libx265/NVENC into MPEG-TS, farm.media.encoders), and take the stream's next
    #: segments on this worker's own queue. Off: every segment opens its encoders.
    stream_encoders: bool = True
    #: Streams whose encoders each worker process keeps, least recently used out first.
    stream_encoder_streams: int = Field(4, ge=1)
    #: Seconds a stream's kept encoders outlive its last segment (an idle NVENC session
    #: still counts against the GPU's limit).
    stream_encoder_idle_s: float = Field(30.0, gt=0)


class AIRunnerSettings(FarmBaseSettings):
    """``farm ai-runner``: one built-in pipeline behind ai-runner's HTTP API."""

    ai_runner_pipeline: str = "upscale"
    #: The model id served (default: Livepeer's default model of the pipeline).
    ai_runner_model_id: str | None = None
    ai_runner_host: str = "127.0.0.1"
    ai_runner_port: int = Field(8000, ge=1, le=65535)
    #: Bearer token callers must send (ai-runner's AUTH_TOKEN); none: no auth.
    ai_runner_token: SecretStr | None = None


class NodeSettings(ClusterSettings):
    """``farm node``: the orchestrator's node API."""

    host: str = "127.0.0.1"
    port: int = Field(8935, ge=1, le=65535)
    #: Bearer token of the node API's operator routes (``/chain/...``).
    admin_token: SecretStr = SecretStr(DEV_SECRET)

    #: Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN); remote transcoders attach only over HTTPS.
    tls: bool = False
    #: A given certificate and key (PEM); without them the node makes a self-signed pair once
    #: and keeps it in ``tls_dir``.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_dir: Path = Path(".farm/tls")
    #: Extra names and addresses the self-signed certificate is valid for.
    tls_hosts: tuple[str, ...] = ()
    #: The broker URL as remote transcoders reach it, without credentials (default: the
    #: cluster's broker URL); the node adds each transcoder's own user and password.
    transcoder_broker_url: str | None = None
    #: A transcoder's credential expires this long after its last heartbeat.
    transcoder_credential_ttl_s: float = Field(600.0, gt=0)
    #: Lifetime of the signed URLs remote transcoders move segments and renditions with.
    signed_url_ttl_s: float = Field(120.0, gt=0)
    #: Largest segment or rendition a remote transcoder may upload (go-livepeer: 300 MB).
    max_blob_bytes: int = Field(300_000_000, gt=0)
    #: Accept unmodified go-livepeer transcoders (``livepeer -transcoder -orchAddr -orchSecret``)
    #: on the HTTPS port, with the cluster's ``secret`` as their orchSecret (farm.golivepeer).
    golivepeer: bool = True
    #: Queues the go-livepeer bridge consumes for the attached go-livepeer transcoders.
    golivepeer_queues: tuple[str, ...] = ("transcode.cpu.h264",)
    #: Most tasks in flight on go-livepeer transcoders at once (the bridge's threads).
    golivepeer_max_sessions: int = Field(64, ge=1)

    #: The node as a Livepeer orchestrator (farm.orchestrator): the public URI gateways reach
    #: it at (its ServiceRegistry entry; default https://HOST:PORT), the price it quotes new
    #: sessions until ``farm chain config --price-per-unit`` sets one, the sessions it takes at
    #: once (go-livepeer's -maxSessions), the expected value of a ticket it asks for
    #: (-ticketEV), the gas a redemption costs (face values cover it), a cap on face values
    #: (0: none), and how long rendition URLs live.
    orchestrator: bool = True
    service_uri: str | None = None
    price_per_unit: int = Field(0, ge=0, lt=2**63)
    pixels_per_unit: int = Field(1, gt=0, lt=2**63)
    max_sessions: int = Field(10, ge=1)
    ticket_ev_wei: int = Field(8_000_000_000, gt=0)
    redeem_gas: int = Field(1_200_000, gt=0)
    ticket_max_face_value_wei: int = Field(0, ge=0)
    rendition_ttl_s: float = Field(600.0, gt=0)
    #: Chain reads behind requests (round, block, gas price, senders' funds) are refreshed in
    #: the background once older than this (0: read on every request).
    chain_cache_s: float = Field(2.0, ge=0)

    def orchestrator_uri(self) -> str:
        """The service URI gateways send segments to (no trailing slash)."""
        if self.service_uri:
            return self.service_uri.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @model_validator(mode="after")
    def _cert_and_key(self) -> NodeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("FARM_TLS_CERT and FARM_TLS_KEY go together")
        if self.tls_cert is not None:
            self.tls = True
        return self

    @field_validator("golivepeer_queues")
    @classmethod
    def _golivepeer_codecs(cls, queues: tuple[str, ...]) -> tuple[str, ...]:
        problems = [p for p in map(golivepeer_queue_error, queues) if p is not None]
        if problems:
            raise ValueError("FARM_GOLIVEPEER_QUEUES: " + "; ".join(problems))
        return queues

    @model_validator(mode="after")
    def _golivepeer_has_queues(self) -> NodeSettings:
        if self.golivepeer and not self.golivepeer_queues:
            raise ValueError("FARM_GOLIVEPEER_QUEUES is empty: name a queue, or FARM_GOLIVEPEER=0")
        return self


class TranscoderSettings(MachineSettings, EnvironmentSettings):
    """``farm transcoder``: a remote transcoder attaching to an orchestrator's node API.

    It holds no URL or secret of the cluster's: the node grants the broker credential, and
    its jobs and blobs go through the node API (farm.remote.transcoder).
    """

    #: HOST:PORT of the orchestrator's node API (HTTPS).
    orch_addr: str = "127.0.0.1:8935"
    #: The orchSecret itself, or the path of a file holding it.
    orch_secret: SecretStr | None = None
    #: SHA-256 fingerprint of the node's certificate (hex, colons optional), or a CA file.
    orch_cert_fingerprint: str | None = None
    orch_ca: Path | None = None
    #: Segments in parallel; the registration's capacity.
    capacity: int = Field(1)
    #: Most seconds between reconnect attempts (go-livepeer: one minute).
    max_backoff_s: float = Field(60.0, gt=0)
    #: The region reported to the node.
    region: str = "local"
    #: Its Celery worker sends task events (ClusterSettings.task_events).
    task_events: bool = True


class FlowerSettings(ClusterSettings):
    """``farm flower``: Flower with the app's configuration.

    Flower loads the cluster's Celery app (farm.celery_app.create_app), its queues and beat
    schedule included, so it takes the cluster's settings whole.
    """

    flower_host: str = "127.0.0.1"
    flower_port: int = Field(5555, ge=1, le=65535)
    #: ``user:password`` for Flower's basic auth (its API answers 401 without it).
    flower_basic_auth: SecretStr = SecretStr("admin:" + DEV_SECRET)


class StatusSettings(EnvironmentSettings):
    """``farm status``: how it reads a gateway's admin routes."""

    #: The gateway's admin token; in development its default is the development token that
    #: ``farm up``'s gateway takes.
    admin_token: SecretStr | None = None

    def gateway_token(self) -> str | None:
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        return DEV_SECRET if self.environment == "development" else None


class ExporterSettings(StatusSettings):
    """``farm exporter``: the node API and gateway it reads on every scrape, and the chain
    state it watches when a chain is configured."""

    #: The orchestrator's node API ("": none); for an https one, its certificate's SHA-256
    #: fingerprint or a CA file to verify it by.
    node_url: str = "http://127.0.0.1:8935"
    node_cert_fingerprint: str | None = None
    node_ca: str | None = None
    #: A gateway, for its orchestrator pool and sessions.
    gateway_url: str | None = None
    #: The chain (none: no chain gauges), the orchestrator and senders to watch there, and the
    #: winning-ticket queue's database.
    eth_rpc_url: str | None = None
    eth_controller: str | None = None
    exporter_orchestrator: str | None = None
    exporter_senders: tuple[str, ...] = ()
    ticket_queue_url: str | None = None
    #: Each read's timeout (node, gateway, chain).
    exporter_timeout_s: float = Field(5.0, gt=0)
    exporter_host: str = "127.0.0.1"
    exporter_port: int = Field(9153, ge=1, le=65535)

    @model_validator(mode="after")
    def _chain_watch(self) -> ExporterSettings:
        if self.eth_rpc_url and not (self.eth_controller and self.exporter_orchestrator):
            raise ValueError(
                "chain state needs the Controller address (FARM_ETH_CONTROLLER) and the "
                "orchestrator's address (--orchestrator, FARM_EXPORTER_ORCHESTRATOR)"
            )
        return self

    def chain(self) -> ChainSettings:
        """The chain read for the chain gauges (read only)."""
        return ChainSettings(
            rpc_url=self.eth_rpc_url,
            controller=self.eth_controller,
            rpc_timeout_s=self.exporter_timeout_s,
        )


class UpSettings(NodeSettings):
    """``farm up``: the whole cluster in one supervised process group.

    Its children (node, workers, beat) read their own settings from the same environment;
    ``farm up`` loads the node's, the widest of them, so a configuration they would refuse
    stops it before any child starts.
    """

    home: Path = Path(".farm")
    workers: int = Field(1, ge=1)
    gateway_port: int = Field(9935, ge=1, le=65535)
    #: AI models (WorkerSettings.ai_models): served by one AI worker of their own.
    ai_models: str | None = None
    #: prometheus_client's multiprocess directory for the children (default HOME/metrics,
    #: cleared at each start); its own variable name, which the children's library reads.
    prometheus_multiproc_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
