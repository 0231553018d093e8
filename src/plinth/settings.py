"""One typed settings tree, read once from ``PLINTH_*`` variables and passed down.

Nested groups follow the variable names: ``PLINTH_SERVER__PORT`` sets
``settings.server.port``. Top-level names are short because users type them:
``PLINTH_HOME``, ``PLINTH_URL``, ``PLINTH_TOKEN``, ``PLINTH_DATABASE_URL``,
``PLINTH_ARTIFACTS_URL``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8765
    max_request_bytes: int = Field(64 << 20, description="largest JSON body accepted")
    max_artifact_bytes: int = Field(1 << 40, description="largest single artifact accepted")
    allowed_hosts: list[str] = Field(
        ["127.0.0.1", "localhost", "::1"],
        description="Host headers served (DNS-rebinding defence); add the server's names",
    )
    cors_origins: list[str] = Field([], description="browser origins allowed to call the API")
    trusted_proxies: list[str] = Field(
        [],
        description="addresses or networks of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; none by default, so no client can claim another "
        "address (to dodge the login rate limit, or forge the audit trail's source)",
    )
    upload_idle_seconds: float = Field(
        30.0, gt=0, description="a request body that sends nothing this long is cut off (408)"
    )
    upload_threads: int = Field(32, ge=1, description="threads that write uploads")
    uploads_per_principal: int = Field(8, ge=1, description="uploads one principal runs at once")

    def local_url(self) -> str:
        """Where a process on this machine (a local job) reaches this server: its
        address, or loopback when it listens on every address."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"a trusted proxy is an IP address or network, not {proxy!r}"
                ) from None
        return proxies


class TrackingSettings(BaseModel):
    heartbeat_seconds: float = Field(10.0, gt=0, description="how often a live run says so")
    stale_after_seconds: float = Field(120.0, description="a silent running run is killed")
    flush_interval_seconds: float = Field(0.2, gt=0)
    flush_batch_points: int = 5000
    flush_timeout_seconds: float = Field(
        120.0, description="how long end() waits for an unreachable server"
    )
    queue_points: int = Field(100_000, description="points buffered before log() waits")
    system_metrics_seconds: float = 0.0


class ClientSettings(BaseModel):
    retry_seconds: float = Field(
        90.0,
        ge=0,
        description="how long the SDK retries an idempotent call while the server, its "
        "database or its object store is unavailable (longer than a database restart)",
    )


class NodeSettings(BaseModel):
    """One machine of a pool. Unset figures are read off the machine (local pools)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    cpus: float | None = Field(None, gt=0)
    memory: str | None = Field(None, description="e.g. 64Gi; unset: the machine's")
    gpus: int | None = Field(
        None, ge=0, description="GPU slots; unset: the GPUs NVML finds (none is fine)"
    )


class PoolSettings(BaseModel):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    executor: Literal["local", "ray", "kubernetes"] = "local"
    nodes: list[NodeSettings] = Field(
        [], description="local: unset means this machine, as one node"
    )
    address: str | None = Field(None, description="ray: the cluster's address")
    shared_filesystem: bool = Field(
        True,
        description="ray: the nodes see the server's disk at the same paths; false: each "
        "worker fetches its job's snapshot from the server and its log is read back",
    )
    namespace: str = Field("default", description="kubernetes: where Jobs are created")
    image: str | None = Field(None, description="kubernetes: the image jobs run in")
    service_account: str | None = Field(None, description="kubernetes: the pods' account")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    node_selector: dict[str, str] = Field({}, description="kubernetes: where pods may run")
    run_as_user: int = Field(1000, ge=1, description="kubernetes: the pods' numeric user")


class QuotaSettings(BaseModel):
    cpus: float | None = Field(None, ge=0)
    memory: str | None = None
    gpus: int | None = Field(None, ge=0)
    jobs: int | None = Field(None, ge=0, description="concurrent running jobs")


class ComputeSettings(BaseModel):
    pools: list[PoolSettings] = Field(default_factory=lambda: [PoolSettings(name="local")])
    default_pool: str = "local"
    quotas: dict[str, QuotaSettings] = Field({}, description="per project name")
    lease_seconds: float = Field(30.0, gt=0, description="a worker unheard of this long is lost")
    grace_seconds: float = Field(10.0, ge=0, description="SIGTERM to SIGKILL on cancel/preempt")
    retry_backoff_seconds: float = Field(2.0, ge=0, description="first retry's delay, doubling")
    retry_backoff_max_seconds: float = Field(300.0, ge=0)
    snapshot_max_bytes: int = Field(100 << 20, gt=0, description="largest working directory")
    price_cpu_hour: float = Field(0.0, ge=0)
    price_gpu_hour: float = Field(0.0, ge=0)
    price_gib_hour: float = Field(0.0, ge=0)
    dispatch: bool = Field(
        True,
        description="start queued jobs from this server; false: it only queues them "
        "(another server dispatches, or the queue is held for maintenance)",
    )
    handoff: bool = Field(
        True,
        description="an embedded app that ends with jobs waiting or running starts a "
        "detached `plinth jobs agent` to carry on dispatching them",
    )
    server_url: str | None = Field(
        None,
        description="where a job reaches this server when auth is on (PLINTH_URL in the "
        "job); unset: http://{server.host}:{server.port}",
    )
    local_sandbox: bool = Field(
        True,
        description="with auth on, a job on a local pool, and a deployment's replica, runs in "
        "a sandbox (Linux mount and PID namespaces) that hides the server's home, database, "
        "artifacts and master key; false: it runs as the server's own user and can read them",
    )


class S3Settings(BaseModel):
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = Field(None, description="unset: botocore's credential chain")
    secret_access_key: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PLINTH_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=lambda: Path.home() / ".plinth")
    url: str | None = Field(None, description="a Plinth server; unset means embedded")
    token: str | None = None
    run_id: str | None = Field(
        None, description="the run start_run() continues (set in a job: its tracked run)"
    )
    database_url: str | None = None
    artifacts_url: str | None = None
    master_key: SecretStr | None = Field(
        None, description="base64 AES-256 key: artifacts are then stored encrypted"
    )
    master_key_file: Path | None = Field(None, description="a file holding the master key")
    db_synchronous: str = Field("FULL", pattern="^(FULL|NORMAL|EXTRA)$")
    projects_by_admins_only: bool = Field(
        False, description="only platform admins create projects (default: any user)"
    )
    server: ServerSettings = ServerSettings()
    tracking: TrackingSettings = TrackingSettings()
    client: ClientSettings = ClientSettings()
    s3: S3Settings = S3Settings()
    compute: ComputeSettings = ComputeSettings()

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'plinth.db'}"

    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.home / "artifacts")
