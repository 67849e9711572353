"""The HTTP API over published snapshots: a Litestar app (``app``) whose routes answer from one memory-mapped snapshot.

``live`` follows the published snapshot, ``reader`` opens one, ``lookup``
checks a request's tenant and product against it; the route modules
(``catalogue_routes``, ``session_routes``, ``visual_routes``) and ``app``
answer; ``assignment`` and ``exposures`` are the A/B gateway's; ``metrics``
is ``/metrics``, ``http`` the HTTP parser's limits, ``api_docs`` the OpenAPI
page and ``demo`` the demo page.
"""
