"""How a stage (or a provider under it) says why it failed, and the stop signal.

A leaf module: the stages and the providers both import it and nothing else of each other, so
that providers depend on the pipeline's error vocabulary only, never on its stages. The worker
turns `TransientError` into a retryable Fail and `PermanentError` into a permanent one (FAILED
at once); any other exception is treated as transient, and after max_attempts the job lands in
the dead letter with its summary in `last_error`.
"""

from __future__ import annotations


class StageError(Exception):
    """A classified failure. `code` becomes the job's error_code."""

    retryable: bool = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientError(StageError):
    """Worth retrying: network, throttling, 5xx, an object not there yet."""

    retryable = True


class PermanentError(StageError):
    """Retrying cannot help: invalid input, not a video, refused credentials."""

    retryable = False


class JobStopped(Exception):  # a signal, not an error: hence no "Error" suffix
    """Raised inside a stage when the job was cancelled or its lease was lost."""
