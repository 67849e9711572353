"""The Litestar app: recommendations, the A/B gateway, health, metrics and the OpenAPI schema.

Every answer comes from one memory-mapped snapshot (``server.live``) taken at
the start of the request. Path and query values are checked against strict
patterns and looked up in dictionaries: nothing from a request ever reaches a
query language. Errors are JSON with a ``detail`` that says what was wrong.
"""

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Litestar, MediaType, Response, get
from litestar.exceptions import ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from engine import config as config_module
from server import assignment, catalogue_routes, metrics, visual_routes
from server.demo import demo_page
from server.exposures import ExposureLog
from server.live import LiveSnapshot, NoSnapshot
from server.lookup import Lookup, Unavailable, limit_type
from server.reader import Recommendation, decoded

VISITOR = re.compile(r"[A-Za-z0-9:_.-]{1,128}")
VARIANT_HEADER = "etalage-variant"
"""The gateway names the variant in a response header too: for CDN logs, and for the metrics middleware."""
DEFAULT_LIMIT = 5


class Recommendations(msgspec.Struct):
    """The top of one algorithm's list for a product.

    ``items`` is sent as ``msgspec.Raw``: the snapshot's JSON of the items,
    sliced, not decoded (server.reader). The annotation is the schema those
    bytes follow, which the OpenAPI document shows and the tests decode with.
    """

    tenant: str
    product_id: str
    algorithm: str
    snapshot: str
    items: list[Recommendation]


class GatewayAnswer(msgspec.Struct):
    """What the frontend shows a visitor, and which variant of which experiment chose it (``items`` as in :class:`Recommendations`)."""

    tenant: str
    product_id: str
    visitor: str
    experiment: str
    variant: str
    algorithm: str
    fallback_used: bool
    snapshot: str
    exposure_id: str
    items: list[Recommendation]


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    snapshot: str
    age_seconds: float
    tenants: list[str]
    visual: bool


def create_app(config: config_module.Config) -> Litestar:
    """The app for ``config``: serves ``config.snapshots.root``'s live snapshot and its experiment."""
    live = LiveSnapshot(config.snapshots.root)
    lookup = Lookup(live)
    log = ExposureLog(config.serving.exposures)
    experiment = config.experiment
    max_limit = config.serving.max_limit
    Limit = limit_type(max_limit)

    @get(
        "/v1/{tenant:str}/products/{product_id:str}/recommendations",
        summary="Top N for a product",
        responses={200: ResponseSpec(Recommendations, description="The list, best first")},
    )
    async def recommendations(
        tenant: FromPath[str],
        product_id: FromPath[str],
        limit: Limit = DEFAULT_LIMIT,
        algorithm: Annotated[
            str, Parameter(description="cooccurrence, jaccard, llr, popular, and with [visual] visual or visual_blend")
        ] = config.snapshots.gate_algorithm,
    ) -> ASGIApp:
        """One algorithm's list for a product on a tenant (country), best first: the talk's "top 5"."""
        served, items = lookup.items_json(tenant, product_id, algorithm, limit)
        return _Json(Recommendations(tenant, product_id, algorithm, served.build_id, msgspec.Raw(items)))

    @get(
        "/v1/{tenant:str}/products/{product_id:str}/gateway",
        summary="Recommendations for a visitor, by experiment variant",
        responses={200: ResponseSpec(GatewayAnswer, description="The variant's list, and who answered")},
    )
    async def gateway(
        tenant: FromPath[str],
        product_id: FromPath[str],
        visitor: Annotated[str, Parameter(description="the visitor's id (Divolte's partyId)")],
        limit: Limit = DEFAULT_LIMIT,
    ) -> ASGIApp:
        """Assign the visitor to a variant of the running experiment (PlanOut hashing) and answer from it.

        When the variant's algorithm has no list for the product, its fallback
        (``popular`` by default) answers, and ``fallback_used`` says so. Every
        answer is logged as an exposure for click attribution.
        """
        if not VISITOR.fullmatch(visitor):
            raise ValidationException("visitor must be 1 to 128 letters, digits or ':_.-'")
        served = lookup.product(tenant, product_id)
        variant = assignment.assign(experiment, visitor)
        algorithm, items = variant.algorithm, served.items_json(tenant, variant.algorithm, product_id, limit)
        fallback_used = items == b"[]" and variant.fallback is not None
        if fallback_used:
            algorithm, items = variant.fallback, served.items_json(tenant, variant.fallback, product_id, limit)
        shown = [item.product_id for item in decoded(items)]
        exposure = log.append(
            visitor, tenant, product_id, experiment.name, variant.name, algorithm, served.build_id, shown
        )
        answer = GatewayAnswer(
            tenant,
            product_id,
            visitor,
            experiment.name,
            variant.name,
            algorithm,
            fallback_used,
            served.build_id,
            exposure,
            msgspec.Raw(items),
        )
        return _Json(answer, ((VARIANT_KEY, variant.name.encode()),))

    @get("/health", summary="Liveness")
    async def health() -> Health:
        """The process is up (it may not have a snapshot yet: see /ready)."""
        return Health("ok")

    @get("/ready", summary="Readiness: a snapshot is loaded")
    async def ready() -> Readiness:
        """200 with the served snapshot once one is loaded, 503 before."""
        try:
            served = live.get()
        except NoSnapshot as error:
            raise Unavailable(str(error)) from None
        return Readiness(
            "ready",
            served.build_id,
            round(time.time() - served.created_at.timestamp(), 3),
            sorted(served.tenants),
            served.visual is not None,
        )

    @get("/metrics", media_type=MediaType.TEXT, include_in_schema=False)
    async def prometheus() -> Response:
        created = live.current.created_at.timestamp() if live.current else None
        return Response(metrics.exposition(created), media_type=metrics.CONTENT_TYPE)

    def reload() -> None:
        previous, failures = live.current, len(live.failed)
        if live.refresh():
            metrics.served(
                live.current.build_id, previous.build_id if previous else None, live.current.created_at.timestamp()
            )
        metrics.RELOAD_FAILURES.inc(len(live.failed) - failures)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await asyncio.to_thread(reload)
        tasks = [
            asyncio.create_task(_every(config.serving.reload_seconds, reload)),
            asyncio.create_task(_every(config.serving.flush_seconds, log.flush)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.to_thread(log.flush)

    app = Litestar(
        route_handlers=[
            recommendations,
            gateway,
            health,
            ready,
            prometheus,
            demo_page,
            *catalogue_routes.handlers(lookup, config),
            *visual_routes.handlers(lookup, config),
        ],
        middleware=[_measured],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="etalage",
            version="1",
            path="/schema",
            description="Item-to-item recommendations from read-only snapshots.",
        ),
    )
    app.state.live = live
    app.state.exposures = log
    return app


class _Json:
    """An answer already encoded as JSON, sent as two ASGI messages with nothing else done to it.

    The recommendations and gateway routes return this. Litestar's path for
    a returned struct (serialiser lookup, a ``Response`` and its header
    objects) cost the running server 20 to 30 µs a request, a fifth of the
    recommendations endpoint (tests/bench/bench_serve.py); Litestar passes
    an ASGI app through as it is. The routes name their answer's type in
    ``responses``, so the OpenAPI document still shows it.
    """

    __slots__ = ("body", "headers")

    def __init__(self, answer: msgspec.Struct, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.body = msgspec.json.encode(answer)
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body)), *self.headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


async def _every(seconds: float, work: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(work)


VARIANT_KEY = VARIANT_HEADER.encode()


def _measured(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: count and time every request by route template and variant."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        begin = time.perf_counter()
        status, variant = [500], [""]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                variant[0] = next((v.decode() for k, v in message.get("headers", ()) if k == VARIANT_KEY), "")
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            metrics.observe(scope.get("path_template", "unmatched"), variant[0], status[0], time.perf_counter() - begin)

    return middleware


def from_environment() -> Litestar:
    """The app for the config named by ``ETALAGE_CONFIG``: what ``etalage serve``'s workers import."""
    return create_app(config_module.load(Path(os.environ.get("ETALAGE_CONFIG", "etalage.toml"))))
