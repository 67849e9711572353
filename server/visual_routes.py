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
is not a whole image is refused with 422.
"""


import asyncio
import io
import threading
import warnings
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, Parameter
from PIL import Image, UnidentifiedImageError

from engine.config import Config, Visual
from server.lookup import Lookup, TooLarge, Unavailable, Unprocessable
from server.reader import Recommendation, ServedSnapshot


class LookAlikes(msgspec.Struct):
    """Products whose pictures are nearest to the query, nearest first; ``score`` is the similarity (higher is closer)."""

    tenant: str
    query: str
    model: str
    snapshot: str
    items: list[Recommendation]


class QueryEncoder:
    """The encoder for uploads and texts, loaded once per worker on first use and used by one thread at a time."""

    def __init__(self, settings: Visual) -> None:
        self.settings = settings
        self._encoder: Any = None
        self._lock = threading.Lock()

    @property
    def reads_text(self) -> bool:
        return self.settings.encoder == "open_clip"

    def images(self, image: Image.Image, model_id: str) -> Any:
        """The vector of one decoded image, by the encoder that made ``model_id``'s index."""
        with self._lock:
            return self._ready(model_id).encode_images([image], batch_size=1)[0]

    def text(self, text: str, model_id: str) -> Any:
        with self._lock:
            return self._ready(model_id).encode_text([text])[0]

    def _ready(self, model_id: str) -> Any:
        if self._encoder is None:
            try:
                from models.encoder import EncoderError, open_encoder
            except ImportError as error:
                raise Unavailable(f"encoding a query needs PyTorch: pip install 'etalage[visual]' ({error})") from None
            try:
                self._encoder = open_encoder(self.settings.encoder, model=self.settings.model,
                                             pretrained=self.settings.pretrained, checkpoint=self.settings.checkpoint)
            except EncoderError as error:
                raise Unavailable(f"visual.encoder cannot be loaded: {error}") from None
        if self._encoder.model_id != model_id:
            raise Unavailable(f"the snapshot's index was built by {model_id!r}, but [visual] names "
                              f"{self._encoder.model_id!r}; rebuild, or set [visual] as the build had it")
        return self._encoder


def handlers(lookup: Lookup, config: Config) -> list:
    """The route handlers, bound to one app's snapshot lookup and settings."""
    encoder = QueryEncoder(config.visual)
    serving = config.serving
    Limit = Annotated[int, Parameter(ge=1, le=serving.max_limit, description=f"how many products, 1 to {serving.max_limit}")]

    @get("/v1/{tenant:str}/products/{product_id:str}/visually-similar", summary="Products that look like this one")
    async def visually_similar(tenant: FromPath[str], product_id: FromPath[str], limit: Limit = 10) -> LookAlikes:
        """The tenant's products whose pictures are nearest to this product's, by the snapshot's Annoy index."""
        served = lookup.product(tenant, product_id)
        index = _index(served)
        if (tenant, product_id) not in index:
            raise NotFoundException(f"product {product_id!r} of tenant {tenant!r} has no picture in the visual index")
        items = index.similar(tenant, product_id, limit)
        return _answer(tenant, product_id, served, items)

    @post("/v1/{tenant:str}/images/similar", summary="Products that look like an uploaded photo", status_code=200,
          request_max_body_size=serving.max_upload_bytes)
    async def similar_to_upload(tenant: FromPath[str], request: Request, limit: Limit = 10) -> LookAlikes:
        """Send the photo's bytes as the request body (JPEG, PNG, WebP, GIF ...; any content type).

        413 when the body is over ``serving.max_upload_bytes`` or the picture
        has more than ``serving.max_upload_pixels`` pixels; 422 when it is not
        a whole image.
        """
        served = lookup.tenant(tenant)
        index = _index(served)
        image = _decoded(await request.body(), serving.max_upload_pixels)
        vector = await asyncio.to_thread(encoder.images, image, index.model_id)
        return _answer(tenant, "upload", served, index.nearest(tenant, vector, limit))

    @get("/v1/{tenant:str}/search", summary="Products whose pictures match a text (CLIP models only)")
    async def search(
        tenant: FromPath[str], q: Annotated[str, Parameter(min_length=1, max_length=200, description="what to look for")],
        limit: Limit = 10,
    ) -> LookAlikes:
        """Text to picture search, e.g. "red summer dress": needs ``visual.encoder = "open_clip"``."""
        served = lookup.tenant(tenant)
        index = _index(served)
        if not encoder.reads_text:
            raise NotFoundException(f"text search needs a CLIP model (visual.encoder = \"open_clip\"); "
                                    f"this server's encoder is {config.visual.encoder!r}")
        vector = await asyncio.to_thread(encoder.text, q, index.model_id)
        return _answer(tenant, q, served, index.nearest(tenant, vector, limit))

    return [visually_similar, similar_to_upload, search]


def _index(served: ServedSnapshot) -> Any:
    if served.visual is None and served.has_visual_folder:
        raise Unavailable(f"snapshot {served.build_id} has a visual index, but this server lacks annoy to open it: "
                          "pip install 'etalage[visual]'")
    if served.visual is None:
        raise Unavailable(f"snapshot {served.build_id} has no visual index: set [visual] enabled = true and rebuild")
    return served.visual


def _answer(tenant: str, query: str, served: ServedSnapshot, neighbours: list) -> LookAlikes:
    items = [Recommendation(n.product_id, rank, n.score) for rank, n in enumerate(neighbours, start=1)]
    return LookAlikes(tenant, query, served.visual.model_id, served.build_id, items)


def _decoded(body: bytes, max_pixels: int) -> Image.Image:
    """The upload, decoded, its size checked from the header first.

    Raises:
        TooLarge: more than ``max_pixels`` pixels, or Pillow's own bomb check fires.
        Unprocessable: empty, not an image, or truncated.
    """
    if not body:
        raise Unprocessable("send the image file as the request body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLarge(f"refused as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise Unprocessable("the body is not a picture in a format the server reads (JPEG, PNG, WebP, GIF, ...)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise Unprocessable(f"the picture's header cannot be read ({error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(f"the image is {width} x {height} = {width * height:,} pixels; this server takes at most {max_pixels:,}")
    try:
        image.load()  # decode now: a truncated file fails here, with a 422, not inside the encoder
    except (OSError, SyntaxError, ValueError) as error:
        raise Unprocessable(f"the image cannot be decoded ({error})") from None
    return image
