"""OpenAI providers through the real `openai` client against a local OpenAI-compatible server:
request shapes, the client's own retries on 429/500, then classification of what still fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline.sample_media import SampleAdvert
from tests.support.fake_openai import (
    ANALYSIS,
    API_KEY,
    EMBEDDING_DIMENSION,
    TRANSCRIPT,
    FakeOpenAI,
    fake_vector,
)
from tests.support.processes import free_port
from worker_service.pipeline.errors import PermanentError, StageError, TransientError
from worker_service.providers import openai_api
from worker_service.providers.analysis_schema import ANALYSIS_SCHEMA
from worker_service.providers.interfaces import AnalysisRequest

pytestmark = pytest.mark.integration

TRANSCRIBE = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"


def _client(key: str = API_KEY, retries: int = 2) -> object:
    return openai_api.make_client(key, max_retries=retries, timeout_seconds=10)


@pytest.fixture
def wav(tmp_path: Path, sample: SampleAdvert) -> Path:
    import subprocess

    out = tmp_path / "audio.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(sample.path), "-ac", "1", "-ar", "16000", str(out)],
        check=True,
    )
    return out


def test_transcription_request_and_result(fake_openai: FakeOpenAI, wav: Path) -> None:
    transcriber = openai_api.OpenAITranscriber(_client(), "whisper-1")  # type: ignore[arg-type]
    transcript = transcriber.transcribe(wav)
    assert transcript.text == TRANSCRIPT
    assert transcript.language == "english"
    assert [s.start for s in transcript.segments] == [0.0, 3.5]

    (request,) = fake_openai.requests
    assert request.path == TRANSCRIBE
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.form["model"] == "whisper-1"
    assert request.form["response_format"] == "verbose_json"
    assert request.form["file"]["bytes"] == wav.read_bytes()


def test_analysis_asks_for_strict_json_schema_with_keyframes(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    frames = []
    for i in range(3):
        frame = tmp_path / f"{i}.jpg"
        frame.write_bytes(b"\xff\xd8fake-jpeg")
        frames.append(frame)
    analyzer = openai_api.OpenAIAnalyzer(_client(), "gpt-4o-mini", max_images=2)  # type: ignore[arg-type]
    result = analyzer.analyse(
        AnalysisRequest(transcript=TRANSCRIPT, media={"duration_seconds": 8.0}, keyframes=frames)
    )
    assert result == ANALYSIS

    (request,) = fake_openai.requests
    body = request.json
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"] == ANALYSIS_SCHEMA
    system, user = body["messages"]
    assert system["role"] == "system"
    parts = user["content"]
    assert TRANSCRIPT in parts[0]["text"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 2  # max_images
    assert images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_embeddings_request_and_vectors(fake_openai: FakeOpenAI) -> None:
    embedder = openai_api.OpenAIEmbedder(_client(), "text-embedding-3-small")  # type: ignore[arg-type]
    vectors = embedder.embed(["first chunk", "second chunk"])
    assert vectors == [
        pytest.approx(fake_vector("first chunk")),
        pytest.approx(fake_vector("second chunk")),
    ]
    assert all(len(v) == EMBEDDING_DIMENSION for v in vectors)
    (request,) = fake_openai.requests
    assert request.json == {
        "model": "text-embedding-3-small",
        "input": ["first chunk", "second chunk"],
        "encoding_format": "float",
    }


def test_client_retries_429_and_500_then_succeeds(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail(EMBED, 429, 500)
    embedder = openai_api.OpenAIEmbedder(_client(retries=2), "text-embedding-3-small")  # type: ignore[arg-type]
    assert len(embedder.embed(["text"])) == 1
    assert fake_openai.paths() == [EMBED, EMBED, EMBED]


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "OPENAI_RATE_LIMITED"), (500, "OPENAI_UNAVAILABLE"), (503, "OPENAI_UNAVAILABLE")],
)
def test_persistent_throttling_and_server_errors_are_transient(
    fake_openai: FakeOpenAI, status: int, code: str
) -> None:
    fake_openai.fail(CHAT, status, status, status)
    analyzer = openai_api.OpenAIAnalyzer(_client(retries=2), "gpt-4o-mini", max_images=0)  # type: ignore[arg-type]
    with pytest.raises(TransientError) as raised:
        analyzer.analyse(AnalysisRequest(transcript="x", media={}, keyframes=[]))
    assert raised.value.code == code
    assert fake_openai.paths() == [CHAT] * 3, "the client retried twice before giving up"


def test_refused_key_is_permanent(fake_openai: FakeOpenAI, wav: Path) -> None:
    transcriber = openai_api.OpenAITranscriber(_client(key="sk-wrong"), "whisper-1")  # type: ignore[arg-type]
    with pytest.raises(PermanentError) as raised:
        transcriber.transcribe(wav)
    assert raised.value.code == "OPENAI_AUTH_FAILED"
    assert "sk-wrong" not in str(raised.value)
    assert len(fake_openai.requests) == 1, "a 401 is not retried"


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (403, "OPENAI_PERMISSION_DENIED", PermanentError),
        (404, "OPENAI_MODEL_NOT_FOUND", PermanentError),
        (400, "OPENAI_BAD_REQUEST", PermanentError),
    ],
)
def test_other_client_errors(
    fake_openai: FakeOpenAI, status: int, code: str, error_type: type[StageError]
) -> None:
    fake_openai.fail(EMBED, status)
    embedder = openai_api.OpenAIEmbedder(_client(), "text-embedding-3-small")  # type: ignore[arg-type]
    with pytest.raises(error_type) as raised:
        embedder.embed(["text"])
    assert raised.value.code == code


def test_unreachable_api_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    embedder = openai_api.OpenAIEmbedder(_client(retries=0), "text-embedding-3-small")  # type: ignore[arg-type]
    with pytest.raises(TransientError) as raised:
        embedder.embed(["text"])
    assert raised.value.code == "OPENAI_UNAVAILABLE"


def test_analysis_that_is_not_json_is_transient(fake_openai: FakeOpenAI) -> None:
    fake_openai.analysis_content = '{"brand": "cut off'
    analyzer = openai_api.OpenAIAnalyzer(_client(), "gpt-4o-mini", max_images=0)  # type: ignore[arg-type]
    with pytest.raises(TransientError) as raised:
        analyzer.analyse(AnalysisRequest(transcript="x", media={}, keyframes=[]))
    assert raised.value.code == "LLM_INVALID_OUTPUT"


def test_analysis_missing_fields_is_rejected(fake_openai: FakeOpenAI) -> None:
    fake_openai.analysis_content = json.dumps({"brand": "Sparkle Cola"})
    analyzer = openai_api.OpenAIAnalyzer(_client(), "gpt-4o-mini", max_images=0)  # type: ignore[arg-type]
    with pytest.raises(TransientError, match="schema"):
        analyzer.analyse(AnalysisRequest(transcript="x", media={}, keyframes=[]))
