"""LLM summaries through real HTTP on loopback: the answer or the template, with the reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography.fernet import Fernet

from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.summaries import (
    AnthropicProvider,
    KeyStoreError,
    OllamaProvider,
    OpenAIProvider,
    ProviderKeys,
    Summarizer,
    SummaryFailed,
    provider_from_settings,
    verify,
)
from netmon.app.analysis.worker import AnalysisWorker
from netmon.app.settings import load_settings
from netmon.storage.contract.events import FlowClassified, FlowObserved, Talker, WindowSummarized
from netmon.storage.eventlog import EventLog
from tests.analysis.llm_server import LlmServer, llm_server
from tests.analysis.test_worker import T0, all_events, restamp

WINDOW = WindowSummarized(
    id="0" * 32,
    ts=T0 + 300,
    branch="paris",
    window_start=T0,
    window_end=T0 + 300,
    flows=120,
    bytes=50_000,
    packets=900,
    labels={"benign": 100, "attack": 20},
    attack_types={"portscan": 20},
    top_talkers=(Talker(key="10.1.2.3", flows=80, bytes=40_000),),
    evidence_ids=("a" * 32, "b" * 32),
)


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


@pytest.mark.parametrize(
    ("mode", "source", "reason"),
    [
        ("good", "llm:ollama/tiny", ""),
        ("slow", "template", "timed out"),
        ("error", "template", "HTTP 500"),
        ("invalid", "template", "invalid response"),
        ("lying", "template", "IPs the window does not hold: ['203.0.113.66']"),
    ],
)
def test_ollama_answer_or_template_is_stored_by_the_worker(
    server: LlmServer,
    default_model: Path,
    corpus_flows: list[FlowObserved],
    tmp_path: Path,
    mode: str,
    source: str,
    reason: str,
) -> None:
    server.mode = mode
    environ = {
        "NETMON_STORE__DATA_DIR": str(tmp_path),
        "NETMON_ANALYSIS__PROVIDER": "ollama",
        "NETMON_ANALYSIS__OLLAMA_HOST": server.url,
        "NETMON_ANALYSIS__OLLAMA_MODEL": "tiny",
        "NETMON_ANALYSIS__LLM_TIMEOUT_S": "3",  # generous: the machine may be busy
    }
    settings = load_settings(environ=environ, dotenv_file=None)
    flows = restamp(corpus_flows[:300], T0, 250, "paris")
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(flows)
    provider = provider_from_settings(settings.analysis, None)
    assert isinstance(provider, OllamaProvider)
    summarizer = Summarizer(provider, settings.analysis.llm_timeout_s)
    worker = AnalysisWorker(settings, Classifier(default_model), summarizer)
    asyncio.run(worker.run(once=True))
    [window] = [e for e in all_events(tmp_path) if isinstance(e, WindowSummarized)]
    assert window.summary_source == source, window.summary_fallback_reason
    assert reason in window.summary_fallback_reason
    assert len(server.requests) == 1  # one call per window
    path, _, body = server.requests[0]
    assert path == "/api/chat" and body["model"] == "tiny" and body["format"] == "json"
    if mode == "good":
        talker = window.top_talkers[0].key
        assert window.summary == (
            f"{window.flows} flows on paris; the busiest host was {talker}."
            f" [evidence: IPs {talker}; flows={window.flows}]"
        )
    else:
        assert window.summary.startswith("paris ") and f"{window.flows} flows" in window.summary


def test_a_slow_model_does_not_hold_the_worker_back(
    server: LlmServer, default_model: Path, corpus_flows: list[FlowObserved], tmp_path: Path
) -> None:
    server.mode = "slow"
    environ = {"NETMON_STORE__DATA_DIR": str(tmp_path), "NETMON_ANALYSIS__WINDOW_GRACE_S": "0"}
    settings = load_settings(environ=environ, dotenv_file=None)
    summarizer = Summarizer(OllamaProvider(server.url, "tiny", 30), 30)
    worker = AnalysisWorker(settings, Classifier(default_model), summarizer)
    first = restamp(corpus_flows[:100], T0, 100, "b")
    later = restamp(corpus_flows[100:300], T0 + 600, 100, "b")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        with EventLog(tmp_path, "replica-1") as writer:
            writer.append(first)
            assert await asyncio.to_thread(server.received.wait, 20)  # the summary call hangs
            writer.append(later)
        deadline = time.monotonic() + 20
        while worker.stats.flows_classified < len(first) + len(later):
            assert time.monotonic() < deadline, "flows after the hanging call were not classified"
            await asyncio.sleep(0.02)
        assert worker.pending, "the first window is still waiting for its summary"
        server.release.set()
        while worker.pending:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(scenario())
    verdicts = [e for e in all_events(tmp_path) if isinstance(e, FlowClassified)]
    assert len(verdicts) == 300


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_openai_and_anthropic_apis_with_encrypted_keys(
    server: LlmServer, tmp_path: Path, vendor: str
) -> None:
    secret = Fernet.generate_key().decode()
    keys = ProviderKeys(tmp_path, secret)
    keys.set(vendor, "sk-test-123\n")
    stored = (tmp_path / "analysis" / "provider_keys.json").read_text()
    assert "sk-test-123" not in stored and keys.names() == [vendor]
    environ = {
        "NETMON_ANALYSIS__PROVIDER": vendor,
        "NETMON_ANALYSIS__LLM_BASE_URL": server.url,
        "NETMON_ANALYSIS__LLM_MODEL": "m1",
    }
    settings = load_settings(environ=environ, dotenv_file=None)
    provider = provider_from_settings(settings.analysis, keys)
    assert isinstance(provider, OpenAIProvider if vendor == "openai" else AnthropicProvider)
    fields = asyncio.run(Summarizer(provider, 5).summarize(WINDOW))
    assert fields["summary_source"] == f"llm:{vendor}/m1"
    assert fields["summary"] == (
        "120 flows on paris; the busiest host was 10.1.2.3. [evidence: IPs 10.1.2.3; flows=120]"
    )
    _, headers, _ = server.requests[0]
    lower = {k.lower(): v for k, v in headers.items()}
    if vendor == "openai":
        assert lower["authorization"] == "Bearer sk-test-123"
    else:
        assert lower["x-api-key"] == "sk-test-123"


def test_provider_keys_need_the_secret_key(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="secret_key is not set"):
        ProviderKeys(tmp_path, "")
    ProviderKeys(tmp_path, Fernet.generate_key().decode()).set("openai", "k")
    with pytest.raises(KeyStoreError, match="another secret_key"):
        ProviderKeys(tmp_path, Fernet.generate_key().decode()).get("openai")


def test_no_provider_without_a_key_falls_back_to_the_template(tmp_path: Path) -> None:
    settings = load_settings(environ={"NETMON_ANALYSIS__PROVIDER": "openai"}, dotenv_file=None)
    keys = ProviderKeys(tmp_path, Fernet.generate_key().decode())
    assert provider_from_settings(settings.analysis, keys) is None


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"summary": "All quiet."}, "cites no evidence"),
        ({"summary": "x", "cited_counts": {"flows": 121}}, "flows=121, the window has 120"),
        ({"summary": "x", "cited_counts": {"label:attack": 20, "mood": 1}}, "unknown count 'mood'"),
        ({"summary": f"see {'c' * 32}", "cited_ips": ["10.1.2.3"]}, "event ids not in"),
        ({"summary": "", "cited_ips": ["10.1.2.3"]}, "empty"),
        ({"cited_ips": ["10.1.2.3"]}, "expected JSON"),
    ],
)
def test_answers_are_checked_against_the_window(answer: dict[str, object], message: str) -> None:
    with pytest.raises(SummaryFailed, match=message.replace("(", r"\(").replace("[", r"\[")):
        verify(msgspec.json.encode(answer).decode(), WINDOW)


def test_a_well_cited_answer_passes() -> None:
    answer = {
        "summary": f"20 of 120 flows were a port scan by 10.1.2.3 (event {'a' * 32}).",
        "cited_ips": ["10.1.2.3"],
        "cited_event_ids": ["a" * 32],
        "cited_counts": {"flows": 120, "attack:portscan": 20},
    }
    stored = verify(msgspec.json.encode(answer).decode(), WINDOW)
    assert stored.startswith("20 of 120")
    assert stored.endswith(
        f"[evidence: IPs 10.1.2.3; attack:portscan=20, flows=120; events {'a' * 32}]"
    )


def test_a_window_waiting_for_its_summary_survives_a_restart(
    server: LlmServer, default_model: Path, corpus_flows: list[FlowObserved], tmp_path: Path
) -> None:
    server.mode = "slow"
    settings = load_settings(environ={"NETMON_STORE__DATA_DIR": str(tmp_path)}, dotenv_file=None)
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(restamp(corpus_flows[:200], T0, 200, "b"))

    async def until_the_call_hangs() -> None:
        worker = AnalysisWorker(
            settings,
            Classifier(default_model),
            Summarizer(OllamaProvider(server.url, "tiny", 30), 30),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        assert await asyncio.to_thread(server.received.wait, 20)
        stop.set()  # stopped while the model is still thinking
        await task

    asyncio.run(until_the_call_hangs())
    assert not [e for e in all_events(tmp_path) if isinstance(e, WindowSummarized)]
    server.mode = "good"
    summarizer = Summarizer(OllamaProvider(server.url, "tiny", 5), 5)
    asyncio.run(AnalysisWorker(settings, Classifier(default_model), summarizer).run(once=True))
    [window] = [e for e in all_events(tmp_path) if isinstance(e, WindowSummarized)]
    assert window.summary_source == "llm:ollama/tiny" and window.flows == 200
    assert len(server.requests) == 2  # the interrupted call, asked again once after the restart
