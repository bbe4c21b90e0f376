"""Loads the pipeline a worker runs: `--pipeline MODULE:CALLABLE` (WORKER_PIPELINE).

The callable returns a `Pipeline`. It is called with whichever of the keyword arguments
`queue_addr`, `token`, `rpc_timeout_seconds` and `tls` it declares (the worker's own, for a pipeline
that reaches the queue service, as the nine-stage one does to store adverts), so that a factory
taking no arguments at all works as it always did; anything else it reads from its environment.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from worker_service.config import WorkerConfig
from worker_service.pipeline.base import Pipeline


class PipelineLoadError(Exception):
    pass


def queue_arguments(config: WorkerConfig) -> dict[str, Any]:
    """What a pipeline factory may ask for to reach the queue service (e.g. to store adverts
    through AdvertService): the worker's own address, token, call deadline and TLS settings."""
    return {
        "queue_addr": config.queue_addr,
        "token": config.auth_token,
        "rpc_timeout_seconds": config.rpc_timeout_seconds,
        "tls": config.tls,
    }


def _declared(factory: Callable[..., Any], offered: Mapping[str, Any]) -> dict[str, Any]:
    """The offered keyword arguments that `factory` declares (all of them for **kwargs)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): call it bare
        return {}
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return dict(offered)
    keywords = {
        parameter.name
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    return {name: value for name, value in offered.items() if name in keywords}


def load_pipeline(spec: str, offered: Mapping[str, Any] | None = None) -> Pipeline:
    """Import `module:callable` and call it with the `offered` keyword arguments it declares;
    it reads the rest of its configuration from its own environment."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PipelineLoadError(f"cannot import {module_name}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise PipelineLoadError(f"{module_name} has no callable {attribute!r}")
    try:
        pipeline = factory(**_declared(factory, offered or {}))
    except Exception as error:
        raise PipelineLoadError(f"{spec} failed: {type(error).__name__}: {error}") from None
    if not isinstance(pipeline, Pipeline) or not pipeline.stages:
        raise PipelineLoadError(f"{spec} did not return a Pipeline with stages")
    return pipeline
