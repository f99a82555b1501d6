"""Window summaries: an LLM writes them when one is configured, a template otherwise.

Providers share one small interface (``complete(system, prompt) -> str``): Ollama through its
own ``AsyncClient``, OpenAI-compatible and Anthropic APIs through httpx. The model must answer
JSON that cites what it rests on (IPs, event ids, counts); the answer is checked against the
window's data before it is stored, and any failure (no provider, timeout, HTTP error, invalid
JSON, a citation the window does not hold) stores the deterministic template instead, with the
reason. One call per window, bounded by a timeout, run as a task so the worker never waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec
from cryptography.fernet import Fernet, InvalidToken

from netmon.storage.contract.events import WindowSummarized
from netmon.storage.contract.files import write_atomically

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a network security analyst. Summarise one 5-minute window of network flows for an "
    "operator in at most four sentences, using only the facts given. Reply with a JSON object: "
    '{"summary": str, "cited_ips": [str], "cited_event_ids": [str], "cited_counts": '
    "{name: number}}. Cite every IP and event id you mention; cited_counts names come from the "
    "facts (flows, bytes, packets, critical_detections, label:<label>, attack:<type>)."
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_EVENT_ID = re.compile(r"\b[0-9a-f]{32}\b")


class SummaryFailed(Exception):
    """The provider gave no usable summary; the message is the recorded fallback reason."""


class Provider(Protocol):
    """One LLM API."""

    name: str  # "ollama/llama3.2", "openai/gpt-4o-mini", ...

    async def complete(self, system: str, prompt: str) -> str: ...


class OllamaProvider:
    """A local or remote Ollama server, through the official async client."""

    def __init__(self, host: str, model: str, timeout: float) -> None:
        self.host, self.model, self.timeout = host, model, timeout
        self.name = f"ollama/{model}"

    async def complete(self, system: str, prompt: str) -> str:
        import ollama

        try:
            async with ollama.AsyncClient(host=self.host, timeout=self.timeout) as client:
                response = await client.chat(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": prompt},
                    ],
                    format="json",
                    options={"temperature": 0},
                )
        except ollama.ResponseError as error:
            raise SummaryFailed(f"ollama answered HTTP {error.status_code}") from None
        except httpx.TimeoutException:
            raise SummaryFailed(f"ollama timed out after {self.timeout} s") from None
        except (httpx.HTTPError, ConnectionError) as error:
            raise SummaryFailed(f"ollama unreachable: {error}") from None
        except (ValueError, msgspec.ValidationError, TypeError) as error:  # not a chat response
            raise SummaryFailed(f"ollama sent an invalid response: {error}") from None
        return response.message.content or ""


class OpenAIProvider:
    """Any OpenAI-compatible chat completions API (OpenAI, vLLM, llama.cpp server, ...)."""

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float) -> None:
        self.base_url = (base_url or "https://api.openai.com").rstrip("/")
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.name = f"openai/{model}"

    async def complete(self, system: str, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }
        data = await _post(
            f"{self.base_url}/v1/chat/completions",
            body,
            {"authorization": f"Bearer {self.api_key}"},
            self.timeout,
            "openai",
        )
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise SummaryFailed("openai response has no choices[0].message.content") from None


class AnthropicProvider:
    """Anthropic's Messages API."""

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float) -> None:
        self.base_url = (base_url or "https://api.anthropic.com").rstrip("/")
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.name = f"anthropic/{model}"

    async def complete(self, system: str, prompt: str) -> str:
        body = {
            "model": self.model,
            "max_tokens": 600,
            "system": system,
            "messages": [{"role": "user", "content": prompt}],
        }
        headers = {"x-api-key": self.api_key, "anthropic-version": "2023-06-01"}
        data = await _post(f"{self.base_url}/v1/messages", body, headers, self.timeout, "anthropic")
        try:
            return "".join(part["text"] for part in data["content"] if part.get("type") == "text")
        except (KeyError, TypeError):
            raise SummaryFailed("anthropic response has no text content") from None


async def _post(url: str, body: Any, headers: dict[str, str], limit_s: float, who: str) -> Any:
    try:
        async with httpx.AsyncClient(timeout=limit_s) as client:
            response = await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException:
        raise SummaryFailed(f"{who} timed out after {limit_s} s") from None
    except httpx.HTTPError as error:
        raise SummaryFailed(f"{who} unreachable: {error}") from None
    if response.status_code != 200:
        raise SummaryFailed(f"{who} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise SummaryFailed(f"{who} sent invalid JSON") from None


# --- Checking an answer against the window ---------------------------------------------------


class Answer(msgspec.Struct):
    """What the model must reply."""

    summary: str
    cited_ips: list[str] = []
    cited_event_ids: list[str] = []
    cited_counts: dict[str, float] = {}


def window_facts(window: WindowSummarized) -> dict[str, Any]:
    """The facts a model is given (and judged against)."""
    return {
        "branch": window.branch,
        "window_start_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(window.window_start)),
        "window_end_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(window.window_end)),
        "flows": window.flows,
        "bytes": window.bytes,
        "packets": window.packets,
        "labels": window.labels,
        "attack_types": window.attack_types,
        "top_talkers": [msgspec.to_builtins(t) for t in window.top_talkers],
        "top_domains": [msgspec.to_builtins(t) for t in window.top_domains],
        "critical_detections": window.critical_detections,
        "evidence_event_ids": list(window.evidence_ids),
    }


def _known_counts(window: WindowSummarized) -> dict[str, float]:
    counts: dict[str, float] = {
        "flows": window.flows,
        "bytes": window.bytes,
        "packets": window.packets,
        "critical_detections": window.critical_detections,
    }
    counts.update({f"label:{k}": v for k, v in window.labels.items()})
    counts.update({f"attack:{k}": v for k, v in window.attack_types.items()})
    return counts


def verify(raw: str, window: WindowSummarized) -> str:
    """The summary text of a model answer that holds up against the window; else SummaryFailed."""
    try:
        answer = msgspec.json.decode(raw.encode(), type=Answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise SummaryFailed(f"answer is not the expected JSON: {error}") from None
    text = answer.summary.strip()
    if not text or len(text) > 2000:
        raise SummaryFailed("answer summary is empty or longer than 2000 characters")
    known_ips = {t.key for t in window.top_talkers}
    known_ids = set(window.evidence_ids)
    if not (answer.cited_ips or answer.cited_event_ids or answer.cited_counts):
        raise SummaryFailed("answer cites no evidence")
    mentioned_ips = set(answer.cited_ips) | set(_IPV4.findall(text))
    unknown_ips = sorted(ip for ip in mentioned_ips if ip not in known_ips)
    if unknown_ips:
        raise SummaryFailed(f"answer cites IPs the window does not hold: {unknown_ips[:5]}")
    mentioned_ids = set(answer.cited_event_ids) | set(_EVENT_ID.findall(text))
    unknown_ids = sorted(mentioned_ids - known_ids)
    if unknown_ids:
        raise SummaryFailed(
            f"answer cites event ids not in the window's evidence: {unknown_ids[:5]}"
        )
    counts = _known_counts(window)
    for name, value in answer.cited_counts.items():
        if name not in counts:
            raise SummaryFailed(f"answer cites an unknown count {name!r}")
        if counts[name] != value:
            raise SummaryFailed(f"answer says {name}={value:g}, the window has {counts[name]:g}")
    return text + citations(answer)


def citations(answer: Answer) -> str:
    """The checked citations, appended to the stored text so a reader sees what it rests on."""
    parts = []
    if answer.cited_ips:
        parts.append("IPs " + ", ".join(sorted(set(answer.cited_ips))))
    if answer.cited_counts:
        parts.append(", ".join(f"{k}={v:g}" for k, v in sorted(answer.cited_counts.items())))
    if answer.cited_event_ids:
        parts.append("events " + ", ".join(sorted(set(answer.cited_event_ids))))
    return " [evidence: " + "; ".join(parts) + "]" if parts else ""


def template_summary(window: WindowSummarized) -> str:
    """The deterministic summary stored when no model is used (or its answer failed)."""
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(window.window_start))
    end = time.strftime("%H:%M", time.gmtime(window.window_end))
    parts = [f"{window.branch} {start}-{end} UTC: {window.flows} flows, {_size(window.bytes)}."]
    if window.labels:
        mix = ", ".join(f"{k} {v}" for k, v in sorted(window.labels.items(), key=lambda kv: -kv[1]))
        parts.append(f"Labels: {mix}.")
    if window.attack_types:
        kinds = ", ".join(
            f"{k} {v}" for k, v in sorted(window.attack_types.items(), key=lambda kv: -kv[1])
        )
        parts.append(f"Attack types: {kinds}.")
    if window.top_talkers:
        talkers = ", ".join(
            f"{t.key} ({t.flows} flows, {_size(t.bytes)})" for t in window.top_talkers[:3]
        )
        parts.append(f"Top talkers: {talkers}.")
    if window.top_domains:
        parts.append("Top domains: " + ", ".join(t.key for t in window.top_domains[:3]) + ".")
    if window.critical_detections:
        ids = ", ".join(window.evidence_ids[: min(3, window.critical_detections)])
        parts.append(f"{window.critical_detections} critical detections (e.g. {ids}).")
    return " ".join(parts)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


class Summarizer:
    """Summarises windows with a provider (or none), falling back to the template."""

    def __init__(self, provider: Provider | None, timeout: float = 30.0) -> None:
        self.provider, self.timeout = provider, timeout

    async def summarize(self, window: WindowSummarized) -> dict[str, str]:
        """The summary fields (summary, summary_source, summary_fallback_reason) for a window."""
        if self.provider is None:
            return self.fallback(window, "no LLM provider configured")
        prompt = json.dumps(window_facts(window), sort_keys=True)
        try:
            # The provider has its own timeout; this one also bounds a server that trickles.
            raw = await asyncio.wait_for(
                self.provider.complete(SYSTEM_PROMPT, prompt), self.timeout
            )
            text = verify(raw, window)
        except TimeoutError:
            return self.fallback(window, f"{self.provider.name} timed out after {self.timeout} s")
        except SummaryFailed as error:
            return self.fallback(window, f"{self.provider.name}: {error}")
        return {
            "summary": text,
            "summary_source": f"llm:{self.provider.name}",
            "summary_fallback_reason": "",
        }

    @staticmethod
    def fallback(window: WindowSummarized, reason: str) -> dict[str, str]:
        log.info("window %s %s: template summary (%s)", window.branch, window.window_start, reason)
        return {
            "summary": template_summary(window),
            "summary_source": "template",
            "summary_fallback_reason": reason,
        }


# --- Provider API keys, encrypted at rest ------------------------------------------------------


class KeyStoreError(Exception):
    """Provider keys cannot be stored or read (no secret key, wrong key, bad file)."""


class ProviderKeys:
    """API keys per provider in DATA/analysis/provider_keys.json, each a Fernet token.

    The Fernet key is ``server.secret_key``; nothing here ever returns a key except ``get``,
    which the worker calls to build its provider. ``names()`` is what an API may show.
    """

    def __init__(self, data_dir: Path, secret_key: str) -> None:
        if not secret_key:
            raise KeyStoreError(
                "server.secret_key is not set (NETMON_SERVER__SECRET_KEY): "
                "provider keys cannot be encrypted"
            )
        try:
            self._fernet = Fernet(secret_key.encode())
        except (ValueError, TypeError):
            raise KeyStoreError(
                "server.secret_key is not a Fernet key (Fernet.generate_key())"
            ) from None
        self.path = Path(data_dir) / "analysis" / "provider_keys.json"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise KeyStoreError(f"{self.path} is not valid JSON") from None
        return {str(k): str(v) for k, v in data.items()}

    def set(self, provider: str, api_key: str) -> None:
        """Store (or replace) a provider's key, encrypted."""
        if not api_key.strip():
            raise KeyStoreError("empty API key")
        tokens = self._load()
        tokens[provider] = self._fernet.encrypt(api_key.strip().encode()).decode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(tokens, indent=1).encode(), mode=0o600)

    def get(self, provider: str) -> str | None:
        """The decrypted key of a provider, or None when none is stored."""
        token = self._load().get(provider)
        if token is None:
            return None
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise KeyStoreError(
                f"the {provider} key was encrypted with another secret_key"
            ) from None

    def names(self) -> list[str]:
        """Providers that have a key (never the keys themselves)."""
        return sorted(self._load())


def provider_from_settings(analysis: Any, keys: ProviderKeys | None) -> Provider | None:
    """The configured provider, or None ("none", or a key-needing provider without a key)."""
    if analysis.provider == "none":
        return None
    if analysis.provider == "ollama":
        return OllamaProvider(analysis.ollama_host, analysis.ollama_model, analysis.llm_timeout_s)
    key = keys.get(analysis.provider) if keys is not None else None
    if not key:
        log.warning(
            "analysis.provider is %s but no API key is stored: template summaries",
            analysis.provider,
        )
        return None
    cls = OpenAIProvider if analysis.provider == "openai" else AnthropicProvider
    return cls(analysis.llm_base_url, analysis.llm_model, key, analysis.llm_timeout_s)
