"""The visual recommender demo page: a product grid where a click shows "looks like this" beside "viewed together".

One static HTML file with a little JavaScript that calls the public API
(``/ready``, the catalogue, ``visually-similar`` and the gateway), so the page
shows exactly what the frontend would get, including the experiment variant
that answered. It is not part of the versioned API.
"""

from __future__ import annotations

from importlib import resources

from litestar import MediaType, Response, get

PAGE = resources.files("server").joinpath("static/demo.html").read_text()


@get("/demo", media_type=MediaType.HTML, include_in_schema=False)
async def demo_page() -> Response:
    """The demo page; it reads the tenant from ``?tenant=`` (default: the first one)."""
    return Response(PAGE, media_type=MediaType.HTML)
