"""Recommendations for a visit: the products a visitor viewed so far, blended into one list.

``GET /v1/{tenant}/sessions/recommendations?products=a,b,c`` (most recent
last) answers from the live snapshot alone: each known product's list of the
served algorithm (the snapshot's ``served_algorithm``), weighted by how
recently it was viewed (the last product 1, the one before 1/2, then 1/3,
...) and by each item's place in that list (1/rank), summed per item; the
products of the visit are left out; scores are compared as
``engine.visit_order.blend_key`` gives them, ties going to the lower product
id. The evaluation scores this list at every test step (``visit_blend``). The
literature calls this a recency-weighted blend of item-item lists; it needs
nothing but the lists the product pages already use.

Products that are not in the tenant's catalogue are skipped and counted
(``unknown``); a visit with no known product, or whose lists are all empty,
gets the tenant's most-viewed products (the ``popular`` lists) with
``fallback_used``.
"""

from typing import Annotated

import msgspec
from litestar import get
from litestar.exceptions import ValidationException
from litestar.params import FromPath, Parameter

from engine.config import Config
from engine.visit_order import blend_key
from server.lookup import PRODUCT_ID, Lookup, errors, limit_parameter
from server.reader import Recommendation, ServedSnapshot

MAX_PRODUCTS = 50
"""The most products a visit may name; more is a 400."""
POPULAR = "popular"
WHOLE_LIST = 10_000
"""A limit above any list's length (``algorithms.top_n``): each product's whole list is blended."""


class SessionRecommendations(msgspec.Struct):
    """A visit's blended list, which algorithm's lists made it, and what of the visit was used."""

    tenant: str
    algorithm: str
    snapshot: str
    used: int
    unknown: int
    fallback_used: bool
    items: list[Recommendation]


def handlers(lookup: Lookup, config: Config) -> list:
    """The route handler, bound to one app's snapshot lookup and list limit."""
    limit_bounds = limit_parameter(config.serving.max_limit)

    @get(
        "/v1/{tenant:str}/sessions/recommendations",
        summary="Recommendations for a visit so far",
        responses=errors(404, 503),
    )
    async def session_recommendations(
        tenant: FromPath[str],
        products: Annotated[
            str,
            Parameter(
                description=f"the visit's product ids, comma-separated, most recent last (at most {MAX_PRODUCTS})"
            ),
        ] = "",
        limit: Annotated[int, limit_bounds] = 10,
    ) -> SessionRecommendations:
        """The served algorithm's lists of the visit's products, blended by recency and rank."""
        viewed = visit_products("products", products)
        served = lookup.tenant(tenant)
        return blend(served, tenant, viewed, limit)

    return [session_recommendations]


def visit_products(parameter: str, text: str) -> list[str]:
    """The product ids of a comma-separated query ``parameter``, in order; a 400 for too many or a malformed one."""
    viewed = text.split(",") if text else []
    if len(viewed) > MAX_PRODUCTS:
        raise ValidationException(f"{parameter} names {len(viewed)} products; at most {MAX_PRODUCTS}")
    for product_id in viewed:
        if not PRODUCT_ID.fullmatch(product_id):
            raise ValidationException(
                f"each product id must be 1 to 64 letters, digits, '-' or '_', not {product_id[:80]!r}"
            )
    return viewed


def blend(served: ServedSnapshot, tenant: str, viewed: list[str], limit: int) -> SessionRecommendations:
    """The visit's blended list from ``served`` (``viewed``: most recent last, every id well-formed)."""
    known = [p for p in viewed if served.has_product(tenant, p)]
    algorithm = served.served_algorithm
    # Each product once, at its most recent view (1 for the last one viewed).
    recency: dict[str, int] = {}
    for age, product_id in enumerate(reversed(known), start=1):
        recency.setdefault(product_id, age)
    scores: dict[str, float] = {}
    for product_id, age in recency.items():
        for item in served.recommendations(tenant, algorithm, product_id, WHOLE_LIST):
            if item.product_id not in recency:
                scores[item.product_id] = scores.get(item.product_id, 0.0) + 1.0 / (age * item.rank)
    fallback_used = not scores
    if fallback_used:
        algorithm = POPULAR
        scores = _popular(served, tenant, set(recency))
    best = sorted(scores.items(), key=lambda pair: (-blend_key(pair[1]), pair[0]))[:limit]
    items = [Recommendation(product_id, rank, score) for rank, (product_id, score) in enumerate(best, start=1)]
    return SessionRecommendations(
        tenant, algorithm, served.build_id, len(known), len(viewed) - len(known), fallback_used, items
    )


def _popular(served: ServedSnapshot, tenant: str, leave_out: set[str]) -> dict[str, float]:
    """The tenant's most-viewed products with their sessions (the ``popular`` score), the visit's left out.

    A product's ``popular`` list leaves out the product itself; two products'
    lists together hold every leader, so the first two catalogue products'
    lists are merged.
    """
    merged: dict[str, float] = {}
    for row in served.catalogue_page(tenant, 0, 2)[1]:
        for item in served.recommendations(tenant, POPULAR, row["product_id"], WHOLE_LIST):
            if item.product_id not in leave_out:
                merged[item.product_id] = item.score
    return merged
