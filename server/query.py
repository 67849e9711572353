"""A request's query string, read as Litestar reads it: parsed once by the app's middleware, read by the gateway.

Litestar parses a query string with ``urllib.parse.parse_qsl`` and keeps the
result in a cache of 1,024 strings. The gateway's query holds the visitor's
id, so nearly every request misses that cache and pays for the parse and for
Litestar's conversion of each declared parameter (docs/benchmarks.md,
"Serving under load"). The gateway therefore declares no query parameters to
Litestar and reads them here: split on ``&`` and ``=``, percent-decoded as
``parse_qsl`` decodes them (UTF-8, bad bytes replaced), ``limit`` converted
by msgspec exactly as Litestar converts it, and every error shaped as
Litestar's. :func:`documented` puts the parameters back into the OpenAPI
document.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote_plus

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIType, Operation, Parameter, Schema
from litestar.types import Scope

STATE_KEY = "etalage.query"
"""Where the app's middleware leaves each request's parsed query, in the scope's ``state``, for :func:`of`."""


class Repeated(ValueError):
    """A query parameter is named twice (no route takes a list)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"query parameter {name[:40]!r} is given more than once; give it once")


def parameters(raw: bytes) -> dict[str, str]:
    """The query string's parameters by name, percent-decoded as ``parse_qsl`` decodes them; empty pairs are skipped.

    Raises:
        Repeated: a name comes twice (after decoding).
    """
    found: dict[str, str] = {}
    if not raw:
        return found
    text = raw.decode("latin-1")
    encoded = "%" in text or "+" in text
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if encoded:
            name, value = unquote_plus(name, errors="replace"), unquote_plus(value, errors="replace")
        if name in found:
            raise Repeated(name)
        found[name] = value
    return found


def of(scope: Scope) -> dict[str, str]:
    """The request's query parameters, as the middleware parsed them (:func:`parameters`) before any route ran."""
    parsed: dict[str, str] = scope["state"][STATE_KEY]
    return parsed


def required(found: dict[str, str], name: str, path: str) -> str:
    """The value of query parameter ``name``; a 400 worded as Litestar's when it is missing."""
    try:
        return found[name]
    except KeyError:
        raise ValidationException(f"Missing required query parameter {name!r} for path {path}") from None


def integer(found: dict[str, str], name: str, default: int, low: int, high: int, request: Request) -> int:
    """Query parameter ``name`` as an integer from ``low`` to ``high`` (``default`` when absent), converted as Litestar converts it.

    A 400's detail names the request's method, path and query, as Litestar's do.
    """
    value = found.get(name)
    if value is None:
        return default
    if value.isascii() and value.isdigit() and value[0] != "0" and low <= (number := int(value)) <= high:
        return number  # what msgspec makes of a plain number, without its call
    try:
        return msgspec.convert(value, _bounded(low, high), strict=False)
    except msgspec.ValidationError as error:
        extra = [{"message": str(error), "key": name, "source": "query"}]
        target = f"{request.scope['path']}?{request.scope['query_string'].decode('latin-1')}"
        raise ValidationException(f"Validation failed for {request.method} {target}", extra=extra) from None


@functools.cache
def _bounded(low: int, high: int) -> Any:
    """The type of an integer from ``low`` to ``high``, made once: msgspec caches what it learns per type object."""
    return Annotated[int, msgspec.Meta(ge=low, le=high)]


def described(name: str, description: str, *, required: bool = False, **schema: Any) -> Parameter:
    """Query parameter ``name`` as the OpenAPI document shows it; ``schema`` holds its type and limits (a string by default)."""
    typed = Schema(description=description, **{"type": OpenAPIType.STRING, **schema})
    return Parameter(name=name, param_in="query", schema=typed, description=description, required=required)


def documented(*query: Parameter) -> type[Operation]:
    """A route's ``operation_class``: Litestar's operation for it, with ``query``'s parameters after the path's."""

    @dataclass
    class WithQuery(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or ()), *query]

    return WithQuery
