"""The catalogue endpoints: a tenant's products, page by page, and each product's picture.

The frontend (and the demo page) needs titles and pictures to show a list;
both come from the snapshot's ``products.arrow``, so a list and the products
it names always come from the same build. A picture's file is found from the
catalogue's ``image`` column, relative to the catalogue's folder, as the
build found it: the request only names the product, never a path.
"""

import mimetypes
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import msgspec
from litestar import get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, Parameter
from litestar.response import File

from engine.config import Config
from server.lookup import Lookup, errors, limit_parameter

PICTURE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
"""What the image endpoint will send: a catalogue entry naming any other file gets a 404, not its bytes."""


class Product(msgspec.Struct):
    """A catalogue entry as the API shows it; ``image_url`` is None when the product has no picture."""

    product_id: str
    title: str | None
    brand: str | None
    category: str | None
    colour: str | None
    price: float | None
    image_url: str | None


class CataloguePage(msgspec.Struct):
    tenant: str
    snapshot: str
    total: int
    offset: int
    items: list[Product]


def handlers(lookup: Lookup, config: Config) -> list:
    """The route handlers, bound to one app's snapshot lookup and catalogue folder."""
    base = config.catalogue.parent if isinstance(config.catalogue, Path) else None  # pictures lie beside a local one
    page_size = limit_parameter(config.serving.max_limit, "products per page")

    @get("/v1/{tenant:str}/products", summary="The tenant's catalogue, page by page", responses=errors(404, 503))
    async def catalogue(
        tenant: FromPath[str],
        limit: Annotated[int, page_size] = 24,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000, description="products to skip")] = 0,
    ) -> CataloguePage:
        """Products in catalogue order, with the URL of each one's picture."""
        served = lookup.tenant(tenant)
        total, rows = served.catalogue_page(tenant, offset, limit)
        return CataloguePage(tenant, served.build_id, total, offset, [_product(tenant, row) for row in rows])

    @get("/v1/{tenant:str}/products/{product_id:str}", summary="One catalogue entry", responses=errors(404, 503))
    async def entry(tenant: FromPath[str], product_id: FromPath[str]) -> Product:
        """The product as the catalogue pages show it: title, brand, category, colour, price, picture URL."""
        return _product(tenant, lookup.product(tenant, product_id).product(tenant, product_id))

    @get(
        "/v1/{tenant:str}/products/{product_id:str}/image",
        summary="A product's picture",
        media_type="image/*",
        responses=errors(404, 503),
    )
    async def picture(tenant: FromPath[str], product_id: FromPath[str]) -> File:
        """The picture file the catalogue names for this product."""
        served = lookup.product(tenant, product_id)
        named = served.product(tenant, product_id).get("image")
        path = base / named if named and base else None
        kind = mimetypes.guess_type(path.name)[0] if path else None
        if path is None or kind not in PICTURE_TYPES or not path.is_file():
            raise NotFoundException(f"product {product_id!r} of tenant {tenant!r} has no picture")
        return File(path=Path(path), media_type=kind, content_disposition_type="inline")

    return [catalogue, entry, picture]


def _product(tenant: str, row: dict) -> Product:
    url = f"/v1/{tenant}/products/{quote(row['product_id'], safe='')}/image" if row.get("image") else None
    return Product(
        row["product_id"],
        row.get("title"),
        row.get("brand"),
        row.get("category"),
        row.get("colour"),
        row.get("price"),
        url,
    )
