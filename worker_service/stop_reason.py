"""Why a running job stops before its stages finish; each reason ends in a different call."""

from __future__ import annotations

import enum


class StopReason(enum.Enum):
    # An operator cancelled the job (the heartbeat answer said CANCEL): Fail it, which the queue
    # service records as CANCELLED.
    CANCEL = "cancel"
    # The job's lease is someone else's now (released as stale and re-claimed, or a stage's
    # write was refused as ABORTED): no call at all, the current owner's work stands. It
    # overrides any other reason, since no other call could succeed.
    LEASE_LOST = "lease_lost"
    # None of the job's heartbeats was acknowledged for HEARTBEAT_TIMEOUT_SECONDS (the queue
    # service is unreachable, or the network between them is cut): the service may have released
    # it already, so the worker stops it and makes no call, its Complete included. Like
    # LEASE_LOST it overrides any other reason.
    FENCED = "heartbeat_timeout"
    # The worker is stopping and the grace period is over: Release the job, QUEUED again at once
    # and the unfinished attempt not counted.
    SHUTDOWN = "shutdown"
