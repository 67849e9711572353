"""The "looks like this" endpoints: look-alikes of a product, of an uploaded photo, and of a text (CLIP).

All three search the snapshot's memory-mapped Annoy index (``models.index``)
within one tenant, so another country's products never come back. An
uploaded photo or a text must first go through the same encoder that built
the index: it is loaded on the first such request (PyTorch and the weights
take seconds and some hundred MB per worker, which a server that never gets
an upload should not pay), and each query is encoded in a thread so the
event loop keeps answering other requests meanwhile.

Uploads are checked before any pixel is decoded: the body size is capped by
Litestar (``serving.max_upload_bytes``, 413), the pixel count is read from
the header and capped (``serving.max_upload_pixels``, 413; this is what stops
a decompression bomb, a tiny file that claims a huge canvas), and a body that
is not a whole image is refused with 422. Only JPEG, PNG, WebP and GIF are
opened (``models.IMAGE_FORMATS``, named to Pillow, which would otherwise also
hand an EPS, PS or PDF file to Ghostscript). Decoding happens on the
encoder's thread, which shrinks a picture to at most 1024 pixels a side as
it decodes (``models.encoder.load_image``), so a 20000 x 1 strip costs no
more than a square photo; a request waits for it at most
``serving.decode_seconds`` (413 after that).
"""

import asyncio
import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, Parameter
from PIL import Image, UnidentifiedImageError

from engine.config import Config, Visual
from models import IMAGE_FORMATS
from server.lookup import Lookup, TooLarge, Unavailable, Unprocessable, errors, limit_parameter
from server.reader import Recommendation, ServedSnapshot

MAX_WAITING = 4
"""Photo or text searches that may wait for one worker's encoder; more get 503 at once."""


class LookAlikes(msgspec.Struct):
    """Products whose pictures are nearest to the query, nearest first; ``score`` is the similarity (higher is closer)."""

    tenant: str
    query: str
    model: str
    snapshot: str
    items: list[Recommendation]


class QueryEncoder:
    """The encoder for uploads and texts: loaded once per worker on first use, run on one thread of its own.

    The thread is its own (not the event loop's default pool, which snapshot
    reloads and exposure flushes use), so queries run one at a time and in
    order. At most :data:`MAX_WAITING` may wait for it; more get a 503 at once
    rather than holding their decoded pixels in a queue.
    """

    def __init__(self, settings: Visual, decode_seconds: float) -> None:
        self.settings = settings
        self.decode_seconds = decode_seconds
        self._encoder: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="etalage-encoder")
        self._waiting = 0

    @property
    def reads_text(self) -> bool:
        return self.settings.encoder == "open_clip"

    async def images(self, image: Image.Image, model_id: str) -> Any:
        """The vector of one opened (not yet decoded) image, by the encoder that made ``model_id``'s index.

        The encoder is loaded first, so that its loading never counts against
        the decoding's time limit.

        Raises:
            Unprocessable: the picture cannot be decoded (truncated, corrupt).
            TooLarge: decoding it took longer than ``serving.decode_seconds``.
        """
        encoder = await self._run(self._ready, model_id)
        try:
            pixels = await self._run(_decoded, image, timeout=self.decode_seconds)
        except TimeoutError:
            msg = f"the picture took more than {self.decode_seconds:g} s to decode (serving.decode_seconds)"
            raise TooLarge(msg) from None
        return await self._run(lambda: encoder.encode_images([pixels], batch_size=1)[0])

    async def text(self, text: str, model_id: str) -> Any:
        return await self._run(lambda: self._ready(model_id).encode_text([text])[0])

    async def _run(self, work: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Run ``work`` on the encoder's thread; after ``timeout`` seconds stop waiting (TimeoutError).

        Work that is waited for no longer still holds its place until it ends,
        so abandoned decodes cannot pile up behind the thread.
        """
        if self._waiting >= MAX_WAITING:
            raise Unavailable(
                f"{self._waiting} photo or text searches are already waiting in this worker; retry shortly"
            )
        self._waiting += 1
        future = asyncio.get_running_loop().run_in_executor(self._thread, work, *args)
        future.add_done_callback(self._finished)
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    def _finished(self, _: asyncio.Future) -> None:
        self._waiting -= 1

    def _ready(self, model_id: str) -> Any:
        if self._encoder is None:
            try:
                from models.encoder import EncoderError, open_encoder
            except ImportError as error:
                raise Unavailable(f"encoding a query needs PyTorch: pip install 'etalage[visual]' ({error})") from None
            try:
                self._encoder = open_encoder(
                    self.settings.encoder,
                    model=self.settings.model,
                    pretrained=self.settings.pretrained,
                    checkpoint=self.settings.checkpoint,
                )
            except EncoderError as error:
                raise Unavailable(f"visual.encoder cannot be loaded: {error}") from None
        if self._encoder.model_id != model_id:
            raise Unavailable(
                f"the snapshot's index was built by {model_id!r}, but [visual] names "
                f"{self._encoder.model_id!r}; rebuild, or set [visual] as the build had it"
            )
        return self._encoder


def handlers(lookup: Lookup, config: Config) -> list:
    """The route handlers, bound to one app's snapshot lookup and settings."""
    encoder = QueryEncoder(config.visual, config.serving.decode_seconds)
    serving = config.serving
    limit_bounds = limit_parameter(serving.max_limit)

    @get(
        "/v1/{tenant:str}/products/{product_id:str}/visually-similar",
        summary="Products that look like this one",
        responses=errors(404, 503),
    )
    async def visually_similar(
        tenant: FromPath[str], product_id: FromPath[str], limit: Annotated[int, limit_bounds] = 10
    ) -> LookAlikes:
        """The tenant's products whose pictures are nearest to this product's, by the snapshot's Annoy index."""
        served = lookup.product(tenant, product_id)
        index = _index(served, tenant)
        if (tenant, product_id) not in index:
            raise NotFoundException(f"product {product_id!r} of tenant {tenant!r} has no picture in the visual index")
        items = index.similar(tenant, product_id, limit)
        return _answer(tenant, product_id, served, items)

    @post(
        "/v1/{tenant:str}/images/similar",
        summary="Products that look like an uploaded photo",
        status_code=200,
        request_max_body_size=serving.max_upload_bytes,
        responses=errors(404, 413, 422, 503),
    )
    async def similar_to_upload(
        tenant: FromPath[str], request: Request, limit: Annotated[int, limit_bounds] = 10
    ) -> LookAlikes:
        """Send the photo's bytes as the request body (JPEG, PNG, WebP or GIF; any content type).

        413 when the body is over ``serving.max_upload_bytes``, the picture
        has more than ``serving.max_upload_pixels`` pixels or takes longer
        than ``serving.decode_seconds`` to decode; 422 when it is not a whole
        image in one of those formats.
        """
        served = lookup.tenant(tenant)
        index = _index(served, tenant)
        image = _opened(await request.body(), serving.max_upload_pixels)
        vector = await encoder.images(image, index.model_id)
        return _answer(tenant, "upload", served, index.nearest(tenant, vector, limit))

    @get(
        "/v1/{tenant:str}/search",
        summary="Products whose pictures match a text (CLIP models only)",
        responses=errors(404, 503),
    )
    async def search(
        tenant: FromPath[str],
        q: Annotated[str, Parameter(min_length=1, max_length=200, description="what to look for")],
        limit: Annotated[int, limit_bounds] = 10,
    ) -> LookAlikes:
        """Text to picture search, e.g. "red summer dress": needs ``visual.encoder = "open_clip"``."""
        served = lookup.tenant(tenant)
        index = _index(served, tenant)
        if not encoder.reads_text:
            raise NotFoundException(
                f'text search needs a CLIP model (visual.encoder = "open_clip"); '
                f"this server's encoder is {config.visual.encoder!r}"
            )
        vector = await encoder.text(q, index.model_id)
        return _answer(tenant, q, served, index.nearest(tenant, vector, limit))

    return [visually_similar, similar_to_upload, search]


def _index(served: ServedSnapshot, tenant: str) -> Any:
    """The snapshot's visual index, once it is there and has pictures of ``tenant`` (else 503 or 404, saying why)."""
    if served.visual is None and served.has_visual_folder:
        raise Unavailable(
            f"snapshot {served.build_id} has a visual index, but this server lacks annoy to open it: "
            "pip install 'etalage[visual]'"
        )
    if served.visual is None:
        raise Unavailable(f"snapshot {served.build_id} has no visual index: set [visual] enabled = true and rebuild")
    if tenant not in served.visual.forests:
        raise NotFoundException(f"tenant {tenant!r} has no pictures in the visual index")
    return served.visual


def _answer(tenant: str, query: str, served: ServedSnapshot, neighbours: list) -> LookAlikes:
    items = [Recommendation(n.product_id, rank, n.score) for rank, n in enumerate(neighbours, start=1)]
    assert served.visual is not None  # the route's _index refused a snapshot without one
    return LookAlikes(tenant, query, served.visual.model_id, served.build_id, items)


def _opened(body: bytes, max_pixels: int) -> Image.Image:
    """The upload opened (its header read, no pixel decoded yet) once its size is within ``max_pixels``.

    Raises:
        TooLarge: more than ``max_pixels`` pixels, or Pillow's own bomb check fires.
        Unprocessable: empty, or not a picture format Pillow reads.
    """
    if not body:
        raise Unprocessable("send the image file as the request body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLarge(f"refused as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise Unprocessable("the body is not a picture in a format the server reads (JPEG, PNG, WebP or GIF)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise Unprocessable(f"the picture's header cannot be read ({error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(
            f"the image is {width} x {height} = {width * height:,} pixels; this server takes at most {max_pixels:,}"
        )
    return image


def _decoded(image: Image.Image) -> Image.Image:
    """The upload's pixels, decoded on the encoder's thread (``models.encoder`` is loaded by then)."""
    from models.encoder import ImageError, load_image

    try:
        return load_image(image, "the upload")
    except ImageError as error:
        raise Unprocessable(str(error)) from None
