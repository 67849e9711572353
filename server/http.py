"""uvicorn's httptools protocol with a limit on the request line and headers, and its errors as JSON.

uvicorn puts no limit on headers with httptools (a 32 MB header was read
into memory whole), and answers a request it cannot parse with a plain-text
400. Here the URL and headers are counted as they arrive, and a request
whose URL alone passes ``max_header_bytes`` gets 414, one whose headers do
431, before the rest is read; every such answer is JSON with a ``detail``,
as the app's own errors are, and closes the connection.
"""

from __future__ import annotations

from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from engine.config import Serving


class LimitedHttpTools(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that refuses more than ``max_header_bytes`` of request line and headers.

    httptools gathers a header's value whole before it calls back, so the
    count is kept on the bytes as they arrive, up to the blank line that
    ends the headers. ``etalage serve`` names this class to uvicorn, which
    makes one per connection; each worker sets the limit from its config
    (``server.app.from_environment``) before it accepts one.
    """

    max_header_bytes = Serving.max_header_bytes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._line_bytes: int | None = None
        """The request line's length once its end has been seen."""
        self._refusal: tuple[int, str] | None = None

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused already
        if self._in_head:
            if self._line_bytes is None and (line_end := data.find(b"\r\n")) >= 0:
                self._line_bytes = self._head_bytes + line_end
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self.max_header_bytes:
                limit = f"longer than this server takes ({self.max_header_bytes:,} bytes)"
                line = self._head_bytes if self._line_bytes is None else self._line_bytes
                self._refusal = (
                    (414, f"the URL is {limit}")
                    if line > self.max_header_bytes
                    else (431, f"the request's line and headers are {limit}")
                )
                self.send_400_response("")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._line_bytes = True, 0, None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused (too large, or malformed) in JSON, and close."""
        status, detail = self._refusal or (400, f"{msg.rstrip('.')}: not a well-formed HTTP/1.1 request")
        self._refusal = None
        body = msgspec.json.encode({"status_code": status, "detail": detail})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
