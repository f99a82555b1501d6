"""Server settings: one frozen object, loaded from a TOML file, a .env file and NETMON_* variables.

Precedence, lowest first: the defaults below, the TOML file (``--config`` or ``NETMON_CONFIG``),
the ``.env`` file in the working directory, the process environment. A variable names its
section and field with a double underscore: ``NETMON_STORE__DATA_DIR=/var/lib/netmon``; a list
or table setting takes JSON (``NETMON_DETECTION__GUESS_PORTS='[22, 3389]'``).
Every setting is documented in docs/configuration.md (a test checks that none is missing).

No secret has a default: a setting that holds one is empty until the operator sets it, and the
code that needs it refuses to start without it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from dotenv import dotenv_values

from netmon.app.detection_settings import DetectionSettings
from netmon.archive.settings import ArchiveSettings

ENV_PREFIX = "NETMON_"
ENV_SEPARATOR = "__"


class SettingsError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every settings section: unknown keys are errors, not silently ignored.

    (``ArchiveSettings`` is defined by the archive, archive/settings.py, the same way.)
    """


class StoreSettings(Section, frozen=True):
    """The JSONL event store."""

    data_dir: str = "./data"
    # "batch": fsync every appended batch before append returns (no acknowledged event is lost
    # on power failure); "none": leave flushing to the OS (only a process crash is survived).
    durability: Literal["batch", "none"] = "batch"
    segment_max_bytes: int = msgspec.field(default=64 * 1024 * 1024)


class ServerSettings(Section, frozen=True):
    """The HTTP/WebSocket server (one replica)."""

    host: str = "127.0.0.1"
    port: int = 8080
    # This replica's writer name in the event store; unique per replica sharing a data dir.
    replica: str = "replica-1"
    # Encrypts agent keys and provider API keys at rest (a Fernet key). Secret: no default.
    secret_key: str = ""
    # Bearer token Prometheus must send to scrape /metrics. Secret: no default. When empty,
    # /metrics answers loopback clients only (see docs/operations.md).
    metrics_token: str = ""


class AuthSettings(Section, frozen=True):
    """Users, tokens, browser sessions and login throttling (see docs/security.md)."""

    # HS256 key for access tokens, at least 32 characters. Secret: no default. When empty, a
    # random key is generated on first start and kept in the SQLite database (shared by the
    # replicas of one data dir); set it to rotate the key or to keep it out of the database.
    jwt_secret: str = ""
    issuer: str = "netmon"
    audience: str = "netmon-api"
    access_token_minutes: int = 15
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    # "auto": Secure cookies when the request came over HTTPS (X-Forwarded-Proto from nginx).
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    # Extra origins allowed to open WebSockets and send cookie-authenticated writes, comma
    # separated ("https://netmon.example.org"); the server's own origin is always allowed.
    allowed_origins: str = ""
    password_min_length: int = 12
    # Failed logins per account and per client IP before each further attempt waits
    # base * 2^(failures - free) seconds (capped); the count restarts after reset_s quiet.
    throttle_free_attempts: int = 10
    throttle_base_delay_s: float = 1.0
    throttle_max_delay_s: float = 900.0
    throttle_reset_s: float = 900.0
    # argon2id cost (RFC 9106 second recommended option by default).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4


class AnalysisSettings(Section, frozen=True):
    """The analysis worker: classifier, windows, LLM summaries, alert rules, notifications.

    See docs/analysis.md. Secrets (webhook HMAC key, SMTP password) have no default; provider
    API keys are not settings at all: they are stored Fernet-encrypted under the data dir.
    """

    writer: str = "analyzer"  # the worker's writer name in the event store
    model_path: str = ""  # empty: DATA/analysis/model.joblib, built from the corpus when missing
    threshold: float = 0.9  # a flow whose top probability is lower is labelled "unknown"
    batch_size: int = 10000  # events per read; big batches amortise the fsyncs when behind
    window_s: float = 300.0
    window_grace_s: float = 60.0  # a window closes once events are this far past its end
    top_n: int = 5
    # LLM summaries: "none", "ollama", "openai" (any OpenAI-compatible API) or "anthropic".
    provider: Literal["none", "ollama", "openai", "anthropic"] = "none"
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2"
    llm_base_url: str = ""  # openai/anthropic: empty means the vendor's public endpoint
    llm_model: str = ""
    llm_timeout_s: float = 30.0
    # Alert rules: shares are fractions of a window's flows, judged when it has >= min_flows.
    rule_min_flows: int = 20
    rule_attack_share: float = 0.2
    rule_unknown_share: float = 0.3
    rule_surge_factor: float = 5.0  # flows > factor x mean of the previous surge_history windows
    rule_surge_history: int = 6
    alert_cooldown_s: float = 900.0
    # The behaviour detectors' state (app/analysis/behaviour) is saved this often, and when the
    # worker stops; after a crash, counting resumes from the last save.
    behaviour_save_s: float = 30.0
    # Notifications (empty = channel off); only alerts at or above notify_min_severity go out.
    notify_min_severity: Literal["low", "medium", "high", "critical"] = "high"
    webhook_url: str = ""
    webhook_secret: str = ""  # HMAC-SHA256 key for X-Netmon-Signature. Secret: no default.
    syslog_host: str = ""
    syslog_port: int = 514
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""  # Secret: no default.
    smtp_starttls: bool = False
    email_from: str = ""
    email_to: str = ""  # comma separated
    # Notifications wait in DATA/analysis/outbox.sqlite until delivered (docs/analysis.md):
    # attempts after the first, then the notification is marked failed.
    notify_retries: Annotated[int, msgspec.Meta(ge=0)] = 12
    # Seconds before the first retry, doubled after each failed attempt (with jitter).
    notify_backoff_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    # The longest wait between two attempts (seconds).
    notify_backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    # One webhook or SMTP attempt, start to end (seconds).
    notify_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # Delivered and failed notifications stay in the outbox (and visible) this long.
    notify_keep_days: Annotated[float, msgspec.Meta(ge=0)] = 7.0


class IngestSettings(Section, frozen=True):
    """Agent ingest: frame and archive limits, handshake timing; see docs/transport.md."""

    max_frame_bytes: int = 8 * 1024 * 1024  # one WebSocket batch frame, as sent
    max_batch_bytes: int = 64 * 1024 * 1024  # a batch after inflation (zstd or zlib)
    handshake_timeout_s: float = 10.0  # the agent must answer the challenge within this
    handshake_ttl_s: float = 60.0  # a handshake proof older than this is stale
    max_archive_bytes: int = 256 * 1024 * 1024  # body of one offline-archive upload
    max_archive_entries: int = 20_000
    max_archive_uncompressed_bytes: int = 1024 * 1024 * 1024
    max_archive_ratio: float = 50.0  # uncompressed/compressed size of any entry


class LiveSettings(Section, frozen=True):
    """The live feed and projections of each replica (see docs/replicas.md)."""

    # Items a dashboard connection may have waiting; past it the client gets "N events missed"
    # and a fresh snapshot instead of slowing anything down.
    queue_size: int = 256
    # How often an idle replica looks for new events in the shared log (seconds).
    poll_interval_s: float = 0.02
    # How often the projection snapshot (state + log position) is saved while events arrive.
    save_interval_s: float = 1.0
    # An agent silent for longer than this is shown as down (heartbeats come every ~10-30 s).
    agent_timeout_s: float = 90.0
    # Fold the top lists and save the snapshot in a child process of the replica (app/
    # projector.py), so ingest never waits for them; false folds everything in the replica.
    projector: bool = True
    # The projector's CPU priority below the replica's (nice increment, 0-19).
    projector_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10


class Settings(Section, frozen=True):
    """Every section, as passed to ``create_app`` and the CLI commands."""

    store: StoreSettings = StoreSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    detection: DetectionSettings = DetectionSettings()
    archive: ArchiveSettings = ArchiveSettings()
    ingest: IngestSettings = IngestSettings()
    live: LiveSettings = LiveSettings()

    @property
    def data_dir(self) -> Path:
        """The data directory as a path."""
        return Path(self.store.data_dir)


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_file: Path | None = Path(".env"),
) -> Settings:
    """Build the settings from defaults, TOML, .env and environment; raise SettingsError."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_path = config_file or _path_or_none(environ.get(f"{ENV_PREFIX}CONFIG"))
    if config_path is not None:
        _merge(merged, _read_toml(config_path))
    if dotenv_file is not None and dotenv_file.is_file():
        dotenv = {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
        _merge(merged, _nest_env(dotenv))
    _merge(merged, _nest_env(environ))
    return _convert(merged)


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None


def _nest_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """NETMON_STORE__DATA_DIR=x -> {"store": {"data_dir": "x"}}; other variables are ignored."""
    nested: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == f"{ENV_PREFIX}CONFIG":
            continue
        parts = key[len(ENV_PREFIX) :].lower().split(ENV_SEPARATOR)
        if len(parts) != 2 or not all(parts):
            raise SettingsError(
                f"environment variable {key}: expected {ENV_PREFIX}SECTION{ENV_SEPARATOR}FIELD, "
                f"e.g. {ENV_PREFIX}STORE{ENV_SEPARATOR}DATA_DIR"
            )
        nested.setdefault(parts[0], {})[parts[1]] = _json_or_text(key, value)
    return nested


def _json_or_text(key: str, value: str) -> Any:
    """A list or table given as JSON in a variable, decoded; any other value as it is."""
    if not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as error:
        raise SettingsError(f"environment variable {key}: not valid JSON: {error}") from None


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _convert(raw: dict[str, Any]) -> Settings:
    try:
        # strict=False lets "8080" from the environment become an int, "true" a bool.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise SettingsError(f"invalid setting: {_describe(error)}") from None


def _describe(error: msgspec.ValidationError) -> str:
    """Turn msgspec's "... - at `$.store.port`" into "store.port (NETMON_STORE__PORT): ..."."""
    message = str(error)
    if " - at `$." not in message:
        return message
    reason, _, where = message.rpartition(" - at `$.")
    dotted = where.rstrip("`")
    env_name = ENV_PREFIX + dotted.replace(".", ENV_SEPARATOR).upper()
    return f"{dotted} ({env_name}): {reason}"
