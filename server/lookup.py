"""Checking a request's tenant and product against the snapshot it is answered from.

Every route that names a tenant or a product goes through :class:`Lookup`:
the values must match strict patterns (so nothing odd reaches a log line, a
metric or a file name), and they are then looked up in the snapshot's
dictionaries, never pasted into a query.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter, ParameterKwarg

from server.live import LiveSnapshot, NoSnapshot
from server.reader import ServedSnapshot

TENANT = re.compile(r"[a-z]{2,8}")
PRODUCT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


FEWEST = 1
"""The smallest ``limit`` a route takes."""


def limit_parameter(max_limit: int, what: str = "how many products") -> ParameterKwarg:
    """The ``limit`` query parameter of routes that answer a list, 1 to ``max_limit`` (``serving.max_limit``).

    Routes write ``Annotated[int, limit_parameter(...)]``: a type built at runtime is no type mypy can check.
    """
    return Parameter(ge=FEWEST, le=max_limit, description=f"{what}, {FEWEST} to {max_limit}")


class Problem(msgspec.Struct):
    """Every error's JSON body (Litestar's): the status again and what was wrong; a 400 lists the bad values in ``extra``."""

    status_code: int
    detail: str
    extra: list[dict[str, Any]] | None = None


ERRORS = {
    404: "An unknown tenant, or a product its catalogue lacks (the detail says which)",
    413: "The upload is larger than the server takes, in bytes or pixels, or too slow to decode",
    422: "The upload is not a whole JPEG, PNG, WebP or GIF picture",
    503: "Nothing to answer from yet: no snapshot published (or no visual index, or no encoder)",
}
"""The error answers beyond 400 (which Litestar documents by itself), as the API docs describe them."""


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """A route's ``responses`` for the error ``codes`` it can answer, so the OpenAPI document lists them."""
    return {code: ResponseSpec(Problem, description=ERRORS[code], generate_examples=False) for code in codes}


class Unavailable(HTTPException):
    """503: the server cannot answer yet (no snapshot, no visual index, no encoder)."""

    status_code = 503


class TooLarge(HTTPException):
    """413: an upload is larger, in bytes or in pixels, than the server takes."""

    status_code = 413


class Unprocessable(HTTPException):
    """422: an upload arrived whole but is not a usable image."""

    status_code = 422


class Lookup:
    """Takes the live snapshot for one request and checks the request's tenant and product against it."""

    def __init__(self, live: LiveSnapshot) -> None:
        self.live = live

    def tenant(self, tenant: str) -> ServedSnapshot:
        """The snapshot to answer from, once ``tenant`` is a known tenant of it.

        Raises:
            ValidationException: the tenant is malformed (400).
            NotFoundException: the snapshot has no such tenant (404).
            Unavailable: nothing is published yet (503).
        """
        if not TENANT.fullmatch(tenant):
            raise ValidationException(f"tenant must be 2 to 8 lower-case letters, not {tenant[:80]!r}")
        try:
            served = self.live.get()
        except NoSnapshot as error:
            raise Unavailable(str(error)) from None
        if tenant not in served.tenants:
            raise NotFoundException(f"unknown tenant {tenant!r} (known: {', '.join(sorted(served.tenants))})")
        return served

    def product(self, tenant: str, product_id: str) -> ServedSnapshot:
        """As :meth:`tenant`, once ``product_id`` is also in the tenant's catalogue (else 400 or 404).

        A well-formed product of the live catalogue costs one dictionary
        hit; only a miss runs the checks one by one, to say which failed.
        """
        served = self.live.current
        if served is not None and _well_formed(tenant, product_id) and served.has_product(tenant, product_id):
            return served
        return self._checked(tenant, product_id)

    def items_json(
        self, tenant: str, product_id: str, algorithm: str | None, limit: int
    ) -> tuple[ServedSnapshot, str, bytes]:
        """The snapshot, the algorithm and the product's list as JSON (``ServedSnapshot.items_json``), in one lookup.

        ``algorithm`` None is the one the snapshot serves by default. Raises as
        :meth:`product` does, and ValidationException (400) for an algorithm
        the snapshot does not have.
        """
        served = self.live.current
        if served is not None and _well_formed(tenant, product_id):
            chosen = algorithm or served.served_algorithm
            items = served.items_json(tenant, chosen, product_id, limit) if chosen in served.algorithms else None
            if items is not None:
                return served, chosen, items
        served = self.product(tenant, product_id)
        chosen = algorithm or served.served_algorithm
        if chosen not in served.algorithms:
            raise ValidationException(
                f"unknown algorithm {chosen[:40]!r} (known: {', '.join(sorted(served.algorithms))})"
            )
        return served, chosen, served.items_json(tenant, chosen, product_id, limit) or b"[]"

    def _checked(self, tenant: str, product_id: str) -> ServedSnapshot:
        """The full checks, in order, for a product the live catalogue lacks: each failure says what was wrong."""
        if not PRODUCT_ID.fullmatch(product_id):
            raise ValidationException(
                f"product_id must be 1 to 64 letters, digits, '-' or '_', not {product_id[:80]!r}"
            )
        served = self.tenant(tenant)
        if not served.has_product(tenant, product_id):
            raise NotFoundException(f"product {product_id!r} is not in tenant {tenant!r}'s catalogue")
        return served


def _well_formed(tenant: str, product_id: str) -> bool:
    """Both values match their patterns (a catalogue may hold ids that do not: they are never served)."""
    return TENANT.fullmatch(tenant) is not None and PRODUCT_ID.fullmatch(product_id) is not None
