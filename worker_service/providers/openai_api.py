"""OpenAI providers: transcription, chat analysis with structured output, embeddings.

The `openai` client reads OPENAI_BASE_URL itself, so an OpenAI-compatible server (a proxy, a
local model server, the tests' fake) needs no code here. The client retries 408/409/429/5xx and
connection errors on its own (`max_retries`, with backoff); what still fails after that is
classified by `classify_openai_error` and the job retries later with the queue's own backoff.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai

from worker_service.pipeline.errors import PermanentError, StageError, TransientError
from worker_service.providers.analysis_schema import ANALYSIS_FIELDS, ANALYSIS_SCHEMA
from worker_service.providers.interfaces import AnalysisRequest, Transcript, TranscriptSegment

log = logging.getLogger(__name__)

# OpenAI's upload limit for audio transcription.
MAX_AUDIO_BYTES = 25 * 1024 * 1024

_SYSTEM_PROMPT = (
    "You analyse television adverts for a searchable archive. You are given the advert's "
    "transcript (possibly empty), technical facts about the video, and a few keyframes. "
    "Describe only what the material supports; use null when something cannot be told."
)


def classify_openai_error(error: Exception, what: str) -> StageError:
    """Transient: throttling, 5xx, timeouts, connection failures. Permanent: refused credentials
    and requests the API will never accept (each with its own code, for the operator)."""
    if isinstance(error, openai.AuthenticationError):
        return PermanentError("OPENAI_AUTH_FAILED", f"{what}: OpenAI refused the API key (401)")
    if isinstance(error, openai.PermissionDeniedError):
        return PermanentError("OPENAI_PERMISSION_DENIED", f"{what}: OpenAI permission denied (403)")
    if isinstance(error, openai.NotFoundError):
        return PermanentError(
            "OPENAI_MODEL_NOT_FOUND", f"{what}: model or endpoint not found (404)"
        )
    if isinstance(error, openai.BadRequestError | openai.UnprocessableEntityError):
        return PermanentError(
            "OPENAI_BAD_REQUEST", f"{what}: request rejected ({error.status_code}): {error.message}"
        )
    if isinstance(error, openai.RateLimitError):
        return TransientError("OPENAI_RATE_LIMITED", f"{what}: rate limited (429) after retries")
    if isinstance(error, openai.APITimeoutError):
        return TransientError("OPENAI_TIMEOUT", f"{what}: request timed out after retries")
    if isinstance(error, openai.APIConnectionError):
        return TransientError("OPENAI_UNAVAILABLE", f"{what}: cannot connect to the API")
    if isinstance(error, openai.APIStatusError):
        return TransientError(
            "OPENAI_UNAVAILABLE", f"{what}: server error ({error.status_code}) after retries"
        )
    return TransientError("OPENAI_ERROR", f"{what}: {type(error).__name__}")


def make_client(api_key: str, max_retries: int, timeout_seconds: float) -> openai.OpenAI:
    # base_url is left to the client, which reads OPENAI_BASE_URL.
    return openai.OpenAI(api_key=api_key, max_retries=max_retries, timeout=timeout_seconds)


class OpenAITranscriber:
    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self.model = model
        self.name = f"openai:{model}"

    def transcribe(self, audio: Path) -> Transcript:
        size = audio.stat().st_size
        if size > MAX_AUDIO_BYTES:
            raise PermanentError(
                "AUDIO_TOO_LONG", f"audio is {size} bytes; OpenAI accepts {MAX_AUDIO_BYTES}"
            )
        # whisper-1 gives segments and the language with verbose_json; the gpt-4o transcribe
        # models accept only json/text.
        verbose = self.model.startswith("whisper")
        try:
            with audio.open("rb") as file:
                result: Any = self._client.audio.transcriptions.create(
                    model=self.model,
                    file=file,
                    response_format="verbose_json" if verbose else "json",
                )
        except openai.OpenAIError as error:
            raise classify_openai_error(error, "transcription") from error
        segments = tuple(
            TranscriptSegment(
                start=float(_field(seg, "start", 0.0)),
                end=float(_field(seg, "end", 0.0)),
                text=str(_field(seg, "text", "")).strip(),
            )
            for seg in (getattr(result, "segments", None) or [])
        )
        return Transcript(
            text=str(getattr(result, "text", "") or "").strip(),
            language=getattr(result, "language", None),
            segments=segments,
        )


class OpenAIAnalyzer:
    def __init__(self, client: openai.OpenAI, model: str, max_images: int) -> None:
        self._client = client
        self.model = model
        self.max_images = max_images
        self.name = f"openai:{model}"

    def analyse(self, request: AnalysisRequest) -> dict[str, Any]:
        facts = json.dumps(request.media, sort_keys=True)
        content: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": (
                    f"Transcript:\n{request.transcript or '(no speech transcribed)'}\n\n"
                    f"Video facts: {facts}"
                ),
            }
        ]
        for frame in list(request.keyframes)[: self.max_images]:
            data = base64.b64encode(frame.read_bytes()).decode("ascii")
            content.append(
                {
                    "type": "image_url",
                    # "low" detail: a keyframe's gist is enough and costs a fixed, small budget.
                    "image_url": {"url": f"data:image/jpeg;base64,{data}", "detail": "low"},
                }
            )
        messages: list[Any] = [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": content},
        ]
        response_format: Any = {
            "type": "json_schema",
            "json_schema": {"name": "advert_analysis", "strict": True, "schema": ANALYSIS_SCHEMA},
        }
        try:
            completion: Any = self._client.chat.completions.create(
                model=self.model, messages=messages, response_format=response_format
            )
        except openai.OpenAIError as error:
            raise classify_openai_error(error, "llm_analysis") from error
        if not completion.choices:
            raise TransientError("LLM_INVALID_OUTPUT", "llm_analysis: the answer had no choices")
        message = completion.choices[0].message
        if getattr(message, "refusal", None):
            raise PermanentError(
                "OPENAI_REFUSED", f"llm_analysis: model refused: {message.refusal}"
            )
        try:
            analysis = json.loads(message.content or "")
        except json.JSONDecodeError as error:
            # A sampling accident (e.g. cut off at the token limit): another attempt may do.
            raise TransientError(
                "LLM_INVALID_OUTPUT", "llm_analysis: the answer was not JSON"
            ) from error
        if not isinstance(analysis, dict) or not set(ANALYSIS_FIELDS) <= analysis.keys():
            raise TransientError(
                "LLM_INVALID_OUTPUT", "llm_analysis: the answer does not follow the schema"
            )
        return {name: analysis[name] for name in ANALYSIS_FIELDS}


class OpenAIEmbedder:
    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self.model = model
        self.name = f"openai:{model}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            response: Any = self._client.embeddings.create(
                model=self.model, input=list(texts), encoding_format="float"
            )
        except openai.OpenAIError as error:
            raise classify_openai_error(error, "embeddings") from error
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts):
            raise TransientError(
                "EMBEDDING_INVALID_OUTPUT",
                f"embeddings: {len(data)} vectors for {len(texts)} texts",
            )
        vectors = [[float(x) for x in item.embedding] for item in data]
        if len({len(v) for v in vectors}) > 1 or not vectors[0]:
            raise TransientError("EMBEDDING_INVALID_OUTPUT", "embeddings: inconsistent dimensions")
        return vectors


def _field(item: Any, name: str, default: Any) -> Any:
    # Segments arrive as pydantic objects or plain dicts, depending on the response format.
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)
