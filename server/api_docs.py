"""The OpenAPI document and its Swagger UI, served from files inside the package.

Litestar's Swagger page loads the UI from a CDN, which leaves it blank on a
machine without internet (a shop's internal network, a laptop offline). The
UI's files (``swagger-ui-dist`` from npm, Apache-2.0; docs/dependencies.md
says which version and how to update it) lie in ``static/swagger-ui`` and are
served at :data:`STATIC`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

STATIC = "/static/swagger-ui"
"""Where the UI's script, style sheet and icon are served."""

FILES = Path(str(resources.files("server").joinpath("static/swagger-ui")))

openapi = OpenAPIConfig(
    title="etalage",
    version="1",
    path="/schema",
    description="Item-to-item recommendations from read-only snapshots.",
    render_plugins=[
        JsonRenderPlugin(),  # /schema/openapi.json
        SwaggerRenderPlugin(
            js_url=f"{STATIC}/swagger-ui-bundle.js",
            css_url=f"{STATIC}/swagger-ui.css",
            standalone_preset_js_url=f"{STATIC}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{STATIC}/favicon-32x32.png'>",
        ),
    ],
)
"""The schema at ``/schema/openapi.json`` and the UI at ``/schema/swagger``."""

static_files = create_static_files_router(path=STATIC, directories=[FILES], include_in_schema=False)
"""The route handler that sends the UI's files."""
