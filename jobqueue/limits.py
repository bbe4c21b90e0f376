"""The bounds of every value a client can push into the queue service, written once.

The queue service refuses a request outside them with INVALID_ARGUMENT (naming the field), the
gateway's REST models and the worker's configuration check the same numbers before they send
anything, and the .proto comments document them. Every bound is there so that no client can make
the service hold or store an unbounded amount: a Claim with a 1 MB queue name used to leave an
entry per name in the service's memory for good.
"""

from __future__ import annotations

import re

DEFAULT_QUEUE = "default"
# A queue name (EnqueueJob, Claim, a worker's --queue): 1..100 characters, letters, digits and
# `. _ - : /`, starting with a letter or digit. Filters (ListJobs, GetQueueStats,
# ListRunningJobs) accept anything storable up to MAX_QUEUE_FILTER_CHARS, so that a queue an
# operator made in psql can still be listed.
MAX_QUEUE_NAME_CHARS = 100
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}")
MAX_QUEUE_FILTER_CHARS = 200
# A Claim's worker_id (the job's locked_by): 1..200 characters after trimming, no control
# characters.
MAX_WORKER_ID_CHARS = 200
# A caller's idempotency key: 1..500 characters, no control characters, and not of the form of
# the keys the service derives from queue and input (a sha256: 64 lowercase hex characters), so
# that no caller's key can name another input's job (migrations/007_idempotency_namespaces.sql).
MAX_IDEMPOTENCY_KEY_CHARS = 500
DERIVED_KEY = re.compile(r"[0-9a-f]{64}")
# A job's input as JSON text (ASCII, so characters are bytes).
MAX_INPUT_BYTES = 256 * 1024
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
MAX_ATTEMPTS_MAX = 100
# Fail's error_code and message, Release's reason: longer text is cut, not refused (refusing a
# worker's Fail would leave its job RUNNING until the heartbeat timeout).
MAX_ERROR_CODE_CHARS = 200
MAX_TEXT_CHARS = 10_000
# Fail's retry_after.
MAX_RETRY_AFTER_SECONDS = 366 * 86_400

# C0 and C1 control characters, DEL included: PostgreSQL text cannot hold NUL, and the others in
# a name or key are surely a mistake.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def idempotency_key_problem(key: str) -> str | None:
    """Why `key` cannot be a caller's idempotency key, or None when it can."""
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS or CONTROL_CHARACTERS.search(key):
        return (
            f"idempotency_key is at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, none of them "
            "control characters"
        )
    if DERIVED_KEY.fullmatch(key):
        return (
            "idempotency_key of 64 lowercase hex characters is reserved for the keys derived "
            "from queue and input; send another form (e.g. with a prefix)"
        )
    return None


def queue_name_problem(name: str) -> str | None:
    """Why `name` cannot be a queue's name, or None when it can."""
    if len(name) > MAX_QUEUE_NAME_CHARS:
        return f"queue is at most {MAX_QUEUE_NAME_CHARS} characters"
    if not QUEUE_NAME.fullmatch(name):
        return (
            "queue must be letters, digits and . _ - : / (starting with a letter or digit), "
            f"got {name[:40]!r}"
        )
    return None
