"""An in-process queue service on a loopback port, for integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import grpc

from jobqueue.rpc import bearer_metadata
from jobqueue.v1 import (
    admin_service_pb2_grpc,
    advert_service_pb2_grpc,
    queue_service_pb2_grpc,
)
from queue_service.config import Config
from queue_service.server import QueueServer, build


@dataclass
class RunningQueue:
    service: QueueServer
    channel: grpc.aio.Channel
    queue: queue_service_pb2_grpc.QueueServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    adverts: advert_service_pb2_grpc.AdvertServiceStub
    metadata: tuple[tuple[str, str], ...]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.service.port}"


def service_config(database_url: str, **overrides: object) -> Config:
    base = Config(
        database_url=database_url,
        listen="127.0.0.1:0",
        stale_sweep_interval_seconds=0,
        retry_backoff_base_seconds=10,
        apply_migrations=False,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running_queue(config: Config) -> AsyncIterator[RunningQueue]:
    service = await build(config)
    await service.start()
    await service.notifier.listening.wait()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield RunningQueue(
            service=service,
            channel=channel,
            queue=queue_service_pb2_grpc.QueueServiceStub(channel),
            admin=admin_service_pb2_grpc.AdminServiceStub(channel),
            adverts=advert_service_pb2_grpc.AdvertServiceStub(channel),
            metadata=bearer_metadata(config.auth_token),
        )
    finally:
        await channel.close()
        await service.stop(grace=0.5)
