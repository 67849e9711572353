"""The Litestar app: recommendations, the A/B gateway, health, metrics and the OpenAPI schema.

Every answer comes from one memory-mapped snapshot (``server.live``) taken at
the start of the request. Path and query values are checked against strict
patterns and looked up in dictionaries: nothing from a request ever reaches a
query language; a query parameter given twice is a 400, not its last value.
Errors are JSON with a ``detail`` that says what was wrong; an unforeseen
one (a 500) is logged with its traceback under a request id that the answer
names.

Background loops (reloading the snapshot, flushing exposures, re-checking
the snapshot's files) run on threads and survive their errors: each failure
is logged with its traceback, counted in ``etalage_background_failures_total``,
and retried after a pause that doubles up to :data:`MAX_BACKOFF`.
"""

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromPath, Parameter
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from engine import config as config_module
from server import api_docs, assignment, catalogue_routes, metrics, query, session_routes, visual_routes
from server.demo import demo_page
from server.exposures import ExposureLog
from server.http import LimitedHttpTools
from server.live import LiveSnapshot, NoSnapshot
from server.lookup import FEWEST, Lookup, Unavailable, errors, limit_parameter
from server.reader import Recommendation

log = logging.getLogger("etalage.server")

VISITOR = re.compile(r"[A-Za-z0-9:_.-]{1,128}")
VARIANT_HEADER = "etalage-variant"
"""The gateway names the variant in a response header too: for CDN logs, and for the metrics middleware."""
DEFAULT_LIMIT = 5
MAX_BACKOFF = 60.0
"""The longest pause, in seconds, before a failing background loop tries again."""


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
    exposures = ExposureLog(Path(config.serving.exposures))
    experiment = config.experiment
    assign = assignment.Assigner(experiment)
    max_limit = config.serving.max_limit
    limit_bounds = limit_parameter(max_limit)

    @get(
        "/v1/{tenant:str}/products/{product_id:str}/recommendations",
        summary="Top N for a product",
        responses={200: ResponseSpec(Recommendations, description="The list, best first"), **errors(404, 503)},
    )
    async def recommendations(
        tenant: FromPath[str],
        product_id: FromPath[str],
        limit: Annotated[int, limit_bounds] = DEFAULT_LIMIT,
        algorithm: Annotated[
            str | None,
            Parameter(
                description=f"one of {', '.join(config_module.CLICK_ALGORITHMS)}, and with [visual] visual or "
                "visual_blend; by default the one the snapshot serves (with gate_algorithm = auto, its build's best)"
            ),
        ] = None,
    ) -> ASGIApp:
        """One algorithm's list for a product on a tenant (country), best first: the talk's "top 5"."""
        served, algorithm, items = lookup.items_json(tenant, product_id, algorithm, limit)
        # The items are the declared list, already rendered as JSON: msgspec writes Raw bytes as they are.
        rendered = msgspec.Raw(items)
        return _Json(Recommendations(tenant, product_id, algorithm, served.build_id, rendered))  # type: ignore[arg-type]

    @get(
        "/v1/{tenant:str}/products/{product_id:str}/gateway",
        summary="Recommendations for a visitor, by experiment variant",
        responses={
            200: ResponseSpec(GatewayAnswer, description="The variant's list, and who answered"),
            **errors(404, 503),
        },
        operation_class=query.documented(
            query.described("visitor", "the visitor's id (Divolte's partyId)", required=True),
            query.described(
                "limit",
                limit_bounds.description or "",
                type=OpenAPIType.INTEGER,
                minimum=FEWEST,
                maximum=max_limit,
                default=DEFAULT_LIMIT,
            ),
            query.described(
                "visit",
                "the products the visitor viewed before this one, comma-separated, most recent last "
                f"(at most {session_routes.MAX_PRODUCTS}): what a {config_module.VISIT_BLEND} variant blends",
                default="",
            ),
        ),
    )
    async def gateway(tenant: FromPath[str], product_id: FromPath[str], request: Request) -> ASGIApp:
        """Assign the visitor to a variant of the running experiment (PlanOut hashing) and answer from it.

        When the variant's algorithm has no list for the product, its fallback
        (``popular`` by default) answers, and ``fallback_used`` says so. A
        ``visit_blend`` variant answers with the session route's list for
        ``visit`` and then this product. Every answer is logged as an
        exposure for click attribution (queued here, written by the flush loop).
        Its query is read by ``server.query``, not by Litestar: each visitor's differs.
        """
        found = query.of(request.scope)
        visitor = query.required(found, "visitor", request.scope["path"])
        limit = query.integer(found, "limit", DEFAULT_LIMIT, FEWEST, max_limit, request)
        if not VISITOR.fullmatch(visitor):
            raise ValidationException("visitor must be 1 to 128 letters, digits or ':_.-'")
        viewed = session_routes.visit_products("visit", found.get("visit", ""))
        served = lookup.product(tenant, product_id)
        variant = assign(visitor)
        algorithm: str = variant.algorithm
        fallback_used = False
        if algorithm == config_module.VISIT_BLEND:
            blended = session_routes.blend(served, tenant, [*viewed, product_id], limit)
            fallback_used = blended.fallback_used
            algorithm = blended.algorithm if fallback_used else algorithm
            items = msgspec.json.encode(blended.items)
        else:
            items = served.items_json(tenant, algorithm, product_id, limit) or b"[]"
        if items == b"[]" and variant.fallback and not fallback_used:
            algorithm, fallback_used = variant.fallback, True
            items = served.items_json(tenant, algorithm, product_id, limit) or b"[]"
        exposure = exposures.append(
            visitor, tenant, product_id, experiment.name, variant.name, algorithm, served.build_id, items
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
            msgspec.Raw(items),  # type: ignore[arg-type]  # the declared list, already rendered as JSON
        )
        return _Json(answer, ((VARIANT_KEY, variant.name.encode()),))

    @get("/health", summary="Liveness")
    async def health() -> Health:
        """The process is up (it may not have a snapshot yet: see /ready)."""
        return Health("ok")

    @get("/ready", summary="Readiness: a snapshot is loaded", responses=errors(503))
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
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        serving = config.serving
        await asyncio.to_thread(live.refresh)
        tasks = [
            asyncio.create_task(_every("reload", serving.reload_seconds, live.refresh)),
            asyncio.create_task(_every("flush", serving.flush_seconds, exposures.flush)),
            asyncio.create_task(_every("verify", serving.verify_seconds, live.recheck)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            try:
                await asyncio.to_thread(exposures.flush)
            except OSError:
                log.exception(
                    "exposures not all written at shutdown: %d still queued are lost, spilled ones wait in %s",
                    exposures.queued,
                    exposures.spill,
                )

    app = Litestar(
        route_handlers=[
            recommendations,
            gateway,
            health,
            ready,
            prometheus,
            demo_page,
            api_docs.static_files,
            *catalogue_routes.handlers(lookup, config),
            *session_routes.handlers(lookup, config),
            *visual_routes.handlers(lookup, config),
        ],
        middleware=[_measured],
        lifespan=[lifespan],
        exception_handlers={500: _internal_error},
        openapi_config=api_docs.openapi,
    )
    app.state.live = live
    app.state.exposures = exposures
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
        await _answer(send, 200, headers, self.body)


async def _every(name: str, seconds: float, work: Callable[[], object]) -> None:
    """Run ``work`` on a thread every ``seconds`` until cancelled, whatever it raises (see the module's docstring)."""
    pause = seconds
    while True:
        await asyncio.sleep(pause)
        try:
            await asyncio.to_thread(work)
        except Exception:
            pause = min(pause * 2, max(seconds, MAX_BACKOFF))
            metrics.BACKGROUND_FAILURES.labels(name).inc()
            log.exception("background %s failed; trying again in %.1f s", name, pause)
        else:
            pause = seconds


def _internal_error(request: Request, error: Exception) -> Response:
    """A 500: logged with its traceback under a request id, answered as JSON naming that id."""
    request_id = uuid.uuid4().hex[:16]
    log.error("500 for %s %s (request id %s)", request.method, request.url.path, request_id, exc_info=error)
    detail = f"internal server error; the server's log has the details under request id {request_id}"
    return Response({"status_code": 500, "detail": detail, "request_id": request_id}, status_code=500)


VARIANT_KEY = VARIANT_HEADER.encode()


def _measured(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: count and time every request by route template and variant."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
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
            try:
                scope["state"][query.STATE_KEY] = query.parameters(scope["query_string"])
            except query.Repeated as repeated:
                await _refuse(sending, 400, str(repeated))
            else:
                await app(scope, receive, sending)
        finally:
            metrics.observe(scope.get("path_template", "unmatched"), variant[0], status[0], time.perf_counter() - begin)

    return middleware


async def _refuse(send: Send, status: int, detail: str) -> None:
    """Answer with a JSON error shaped like Litestar's own, without entering the app."""
    body = msgspec.json.encode({"status_code": status, "detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await _answer(send, status, headers, body)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Send a whole answer: its start (status and headers), then its body."""
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": headers}
    whole: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(whole)


def from_environment() -> Litestar:
    """The app for the config named by ``ETALAGE_CONFIG``: what ``etalage serve``'s workers import.

    It also sets the header limit of the worker's HTTP protocol (``server.http``) from the same config.
    """
    config = config_module.load(Path(os.environ.get("ETALAGE_CONFIG", "etalage.toml")))
    LimitedHttpTools.max_header_bytes = config.serving.max_header_bytes
    return create_app(config)
