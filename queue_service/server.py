"""Builds the queue service: the grpc.aio server with its services, auth, health and reflection,
the database pools (one per class of call: pools.py), the job notifier, the coalescers and the
stale-job reaper.

Health (`grpc.health.v1`) is SERVING only while the database answers: a watcher pings it every
few seconds on the background pool (so busy hot-path or admin pools cannot make it fail), flips
to NOT_SERVING when it does not (RPCs then fail fast with UNAVAILABLE) and back once it does,
after dropping the pools' broken connections, so an outage heals without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from jobqueue import metrics as served_metrics
from jobqueue import tracing
from jobqueue.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    advert_service_pb2,
    advert_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from queue_service.admin import AdminServicer
from queue_service.advert_store import AdvertStore
from queue_service.adverts import AdvertServicer
from queue_service.audit import AuditLog
from queue_service.auth import Authorizer, auth_interceptors
from queue_service.claims import Claimer
from queue_service.config import Config
from queue_service.errors import StoreUnavailable
from queue_service.metrics import JobTableCollector
from queue_service.notify import JobNotifier
from queue_service.observe import ObservedStore, ObservingInterceptor
from queue_service.orphans import Orphans
from queue_service.pools import Pools, pool_specs
from queue_service.queue import QueueServicer
from queue_service.reaper import Reaper
from queue_service.store import Store
from queue_service.upkeep import Upkeep

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    advert_service_pb2.DESCRIPTOR.services_by_name["AdvertService"].full_name,
)

HEALTH_CHECK_INTERVAL_SECONDS = 2.0

SERVER_OPTIONS = [
    # Without this, a second server could silently bind the same port and share traffic.
    ("grpc.so_reuseport", 0),
    # Workers keep a heartbeat stream open for hours; allow their keepalive pings.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


@dataclass
class QueueServer:
    config: Config
    server: grpc.aio.Server
    pools: Pools
    store: Store
    notifier: JobNotifier
    claimer: Claimer
    queue: QueueServicer
    admin: AdminServicer
    reaper: Reaper
    upkeep: Upkeep
    health: HealthServicer
    port: int
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    # The Prometheus endpoint (QUEUE_METRICS_LISTEN), once started.
    metrics: served_metrics.MetricsServer | None = None
    _collector: JobTableCollector | None = field(default=None, repr=False)

    async def start(self) -> None:
        if self.metrics is not None:
            self._collector = JobTableCollector(
                self.store.job_table,
                {kind: pool.pool for kind, pool in zip(self.pools.specs, self.pools, strict=True)},
                asyncio.get_running_loop(),
            )
            served_metrics.REGISTRY.register(self._collector)
        self.notifier.start()
        self.queue.start()
        self.admin.start()
        await self.server.start()
        await self._set_health(await self._database_ok())
        self._watcher = asyncio.create_task(self._watch_database(), name="db-health")
        self.reaper.start()
        self.upkeep.start()

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop taking calls, let running ones finish within `grace`, then release everything."""
        await self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.reaper.stop()
        await self.upkeep.stop()
        self.queue.close_streams()
        self.claimer.close()
        await self.server.stop(grace)
        await self.queue.stop()
        await self.admin.stop()
        await self.notifier.stop()
        await self.claimer.stop()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        if self._collector is not None:
            served_metrics.REGISTRY.unregister(self._collector)
        await self.pools.close()

    async def _database_ok(self) -> bool:
        try:
            await self.store.ping()
        except StoreUnavailable:
            return False
        return True

    async def _set_health(self, ok: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def _watch_database(self) -> None:
        ok = True
        while True:
            await asyncio.sleep(HEALTH_CHECK_INTERVAL_SECONDS)
            now_ok = await self._database_ok()
            if now_ok and not ok:
                # Connections that died with the old server would fail their next call.
                self.pools.purge()
                log.info("database reachable again; serving")
            elif ok and not now_ok:
                self.pools.purge()
                log.error("database unreachable; health is NOT_SERVING until it answers")
            if now_ok != ok:
                await self._set_health(now_ok)
            ok = now_ok


async def build(config: Config) -> QueueServer:
    """Create (but do not start) a queue service for `config`. Binds the ports."""
    # First: a metrics port in use stops the start-up before anything else is made.
    metrics = (
        served_metrics.serve(config.metrics_listen) if config.metrics_listen is not None else None
    )
    pools = Pools(config.database_url, pool_specs(config))
    await pools.open()
    # Counted and traced only when someone looks (QUEUE_METRICS_LISTEN, OTEL_*).
    observed = config.metrics_listen is not None or tracing.enabled()
    store = (ObservedStore if observed else Store)(
        pools,
        backoff_base_seconds=config.retry_backoff_base_seconds,
        backoff_max_seconds=config.retry_backoff_max_seconds,
    )
    claimer = Claimer(store, max_concurrent=config.max_concurrent_claims)
    notifier = JobNotifier(config.database_url, claimer)
    orphans = Orphans(
        store,
        grace_seconds=config.stream_lost_grace_seconds,
        give_up_seconds=config.heartbeat_timeout_seconds,
    )
    queue = QueueServicer(store, claimer, orphans)
    admin = AdminServicer(store, config, AuditLog(pools.admin))
    interceptors = auth_interceptors(authorizer(config))
    if observed:
        # First, so that it times every call, those the credential check refuses included.
        interceptors = [
            ObservingInterceptor(metrics_on=config.metrics_listen is not None),
            *interceptors,
        ]
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    queue_service_pb2_grpc.add_QueueServiceServicer_to_server(queue, server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
    advert_service_pb2_grpc.add_AdvertServiceServicer_to_server(
        AdvertServicer(AdvertStore(pools.adverts)), server
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        if config.tls is not None:
            port = server.add_secure_port(config.listen, config.tls.credentials())
        else:
            port = server.add_insecure_port(config.listen)
    except RuntimeError:  # grpcio raises where it used to answer 0
        port = 0
    if port == 0:
        # Nothing will serve: let go of what was opened, or its tasks keep the process alive.
        await pools.close()
        if metrics is not None:
            metrics.stop()
        why = "the address is in use or not this host's"
        if config.tls is not None:
            why += ", or the TLS certificate or key is not valid (gRPC's log line above says)"
        raise OSError(f"cannot listen on {config.listen}: {why}")
    return QueueServer(
        config=config,
        server=server,
        pools=pools,
        store=store,
        notifier=notifier,
        claimer=claimer,
        queue=queue,
        admin=admin,
        reaper=Reaper(store, config),
        upkeep=Upkeep(store, config),
        health=health,
        port=port,
        metrics=metrics,
    )


def authorizer(config: Config) -> Authorizer:
    mutual = config.tls is not None and config.tls.mutual
    return Authorizer(
        worker_token=config.worker_token,
        admin_token=config.admin_token,
        shared_token=config.auth_token,
        worker_names=config.tls.worker_names if mutual and config.tls else (),
        admin_names=config.tls.admin_names if mutual and config.tls else (),
    )
