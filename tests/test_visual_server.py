"""The "looks like this" endpoints through Litestar's test client, on a snapshot with a real Annoy index and the real encoder."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient
from msgspec.structs import replace
from PIL import Image

from engine import config
from engine.publish import snapshot
from server.app import create_app
from server.lookup import Unprocessable
from server.reader import ServedSnapshot
from tests.conftest import tenant_products


@pytest.fixture(scope="module")
def shop(visual_shop, tmp_path_factory) -> config.Config:
    """The shared visual shop, with exposures written elsewhere (the shop itself stays as built)."""
    cfg = config.load(visual_shop / "etalage.toml")
    serving = replace(cfg.serving, exposures=tmp_path_factory.mktemp("exposures"))
    return replace(cfg, serving=serving)


@pytest.fixture(scope="module")
def client(shop):
    with TestClient(create_app(shop)) as client:
        yield client


@pytest.fixture(scope="module")
def catalogue(shop) -> pa.Table:
    return pq.read_table(shop.catalogue)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_visually_similar_answers_from_the_index_within_the_tenant(client, shop, catalogue):
    served = ServedSnapshot(snapshot.live(shop.snapshots.root).path)
    for tenant in ("nl", "de", "be"):
        product = sorted(served.visual.products(tenant))[3]
        answer = client.get(f"/v1/{tenant}/products/{product}/visually-similar", params={"limit": 20})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"].startswith("efficientnet-lite0:") and body["snapshot"] == served.build_id
        items = [item["product_id"] for item in body["items"]]
        assert items == [r.product_id for r in served.recommendations(tenant, "visual", product, 20)]
        assert product not in items and set(items) <= tenant_products(catalogue, tenant)
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)


def test_an_uploaded_photo_finds_its_own_product_first(client, shop, catalogue):
    tenant, product, image = next(
        (t, p, i)
        for t, p, i in zip(*(catalogue.column(c).to_pylist() for c in ("tenant", "product_id", "image")), strict=True)
        if t == "de"
    )
    photo = (shop.catalogue.parent / image).read_bytes()
    answer = client.post(
        f"/v1/{tenant}/images/similar", content=photo, params={"limit": 5}, headers={"content-type": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    first = answer.json()["items"][0]
    assert first["score"] == pytest.approx(1.0, abs=1e-4)
    twins = {
        p
        for p, i in zip(catalogue.column("product_id").to_pylist(), catalogue.column("image").to_pylist(), strict=True)
        if (shop.catalogue.parent / i).read_bytes() == photo
    }  # products sharing the very same picture
    assert first["product_id"] in twins and product in twins
    assert {item["product_id"] for item in answer.json()["items"]} <= tenant_products(catalogue, tenant)
    # The same photo as JPEG (another decoder, other bytes) still finds it.
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").save(jpeg, "JPEG", quality=95)
    again = client.post(f"/v1/{tenant}/images/similar", content=jpeg.getvalue())
    assert again.status_code == 200 and again.json()["items"][0]["product_id"] in twins


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"", 422, "send the image file as the request body"),
        (b"GIF89a this is not really a gif", 422, "not a picture in a format the server reads"),
        (b"hello, world", 422, "not a picture in a format the server reads"),
        ("truncated", 422, "cannot be read as an image"),
        ("48 megapixels", 413, "8000 x 6000 = 48,000,000 pixels; this server takes at most 40,000,000"),
        ("bomb", 413, "decompression bomb"),
    ],
)
def test_bad_uploads_get_4xx_json_never_a_crash(client, shop, catalogue, body, status, detail):
    if body == "truncated":
        body = (shop.catalogue.parent / catalogue.column("image")[0].as_py()).read_bytes()[:120]
    elif body == "48 megapixels":
        body = png(Image.new("1", (8000, 6000)))  # a few kB on disk, 48 million pixels once decoded
    elif body == "bomb":
        body = png(Image.new("1", (20000, 10000)))  # beyond Pillow's own decompression-bomb limit
    answer = client.post("/v1/nl/images/similar", content=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert detail in answer.json()["detail"]
    assert client.get("/health").status_code == 200  # and the server goes on


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n"
"""60 bytes that Pillow's EPS plugin would hand to Ghostscript, which loops for ever on them."""


@pytest.mark.parametrize("body", [EPS, EPS.replace(b" EPSF-3.0", b""), b"%PDF-1.4\n%%EOF\n"])
def test_postscript_and_pdf_uploads_are_refused_before_any_decoder_runs(client, tmp_path, body):
    from models.encoder import ImageError, load_image
    from server.visual_routes import _opened

    answer = client.post("/v1/nl/images/similar", content=body)
    assert answer.status_code == 422, answer.text
    assert "not a picture in a format the server reads (JPEG, PNG, WebP or GIF)" in answer.json()["detail"]
    with pytest.raises(Unprocessable):  # refused when opened, before the encoder's thread sees it
        _opened(body, 10**6)
    (tmp_path / "picture.eps").write_bytes(body)  # a catalogue picture goes through the same gate in a build
    with pytest.raises(ImageError, match="cannot identify image file"):
        load_image(tmp_path / "picture.eps")


def test_a_picture_that_takes_too_long_to_decode_gets_413_and_the_worker_goes_on(shop):
    slow = replace(shop, serving=replace(shop.serving, decode_seconds=0.05))
    big = png(Image.new("RGB", (6000, 6000), "white"))  # 36 million pixels, under the limit, a small file
    with TestClient(create_app(slow)) as client:
        assert client.post("/v1/nl/images/similar", content=png(Image.new("RGB", (8, 8)))).status_code == 200
        answer = client.post("/v1/nl/images/similar", content=big)
        assert answer.status_code == 413, answer.text
        assert "took more than 0.05 s to decode (serving.decode_seconds)" in answer.json()["detail"]
        ok = client.post("/v1/nl/images/similar", content=png(Image.new("RGB", (64, 64), "red")))
        assert ok.status_code == 200, ok.text


def test_a_long_thin_strip_is_shrunk_as_it_is_decoded_not_padded_to_a_huge_square(client):
    # 30000 x 1 is within the pixel limit; padded to a square at full size it would be 2.7 GB of RGB.
    strip = png(Image.new("RGB", (30_000, 1), "red"))
    answer = client.post("/v1/nl/images/similar", content=strip, params={"limit": 3})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == 3


def test_too_many_waiting_searches_get_503_at_once(client, monkeypatch):
    from server import visual_routes

    monkeypatch.setattr(visual_routes, "MAX_WAITING", 0)
    answer = client.post("/v1/nl/images/similar", content=png(Image.new("RGB", (32, 32), "blue")))
    assert answer.status_code == 503
    assert "searches are already waiting in this worker; retry shortly" in answer.json()["detail"]


def test_an_upload_over_the_byte_limit_is_refused(shop):
    small = replace(shop, serving=replace(shop.serving, max_upload_bytes=10_000))
    with TestClient(create_app(small)) as client:
        answer = client.post("/v1/nl/images/similar", content=b"\x89PNG" + bytes(20_000))
        assert answer.status_code == 413
        ok = client.post("/v1/nl/images/similar", content=png(Image.new("RGB", (64, 64), "red")))
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/v1/nl/products/nope/visually-similar", 404, "not in tenant 'nl''s catalogue"),
        ("/v1/xx/products/1/visually-similar", 404, "unknown tenant 'xx'"),
        ("/v1/nl/products/..%2F..%2Fetc/visually-similar", 404, "Not Found"),
        ("/v1/nl/products/..%2Eetc/image", 400, "product_id must be"),
        ("/v1/nl/products/PRODUCT/visually-similar?limit=0", 400, "limit"),
        ("/v1/nl/products/PRODUCT/visually-similar?limit=100000", 400, "limit"),
        ("/v1/nl/search?q=red+summer+dress", 404, "text search needs a CLIP model"),
        ("/v1/nl/search?q=", 400, "q"),
        ("/v1/nl/products/nope/image", 404, "not in tenant 'nl''s catalogue"),
        ("/v1/nl/products/nope", 404, "not in tenant 'nl''s catalogue"),
        ("/v1/xx/products/PRODUCT", 404, "unknown tenant 'xx'"),
        ("/v1/nl/products/a%20b", 400, "product_id must be"),
        ("/v1/nl/products?offset=-1", 400, "offset"),
        ("/v1/NL/products", 400, "tenant must be"),
    ],
)
def test_hostile_or_unknown_input_gets_4xx_json(client, catalogue, path, status, detail):
    product = sorted(tenant_products(catalogue, "nl"))[0]
    answer = client.get(path.replace("PRODUCT", product))
    assert answer.status_code == status, answer.text
    assert detail in answer.text


def test_the_catalogue_pages_through_one_tenant_and_links_each_picture(client, shop, catalogue):
    nl = tenant_products(catalogue, "nl")
    first = client.get("/v1/nl/products", params={"limit": 100}).json()
    rest = client.get("/v1/nl/products", params={"limit": 100, "offset": 100}).json()
    assert first["total"] == len(nl)
    seen = [p["product_id"] for p in first["items"] + rest["items"]]
    assert len(seen) == len(set(seen)) == min(200, len(nl)) and set(seen) <= nl
    item = first["items"][0]
    assert item["title"] and item["image_url"] == f"/v1/nl/products/{item['product_id']}/image"
    picture = client.get(item["image_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    image = dict(zip(catalogue.column("product_id").to_pylist(), catalogue.column("image").to_pylist(), strict=True))[
        item["product_id"]
    ]
    assert picture.content == (shop.catalogue.parent / image).read_bytes()
    assert client.get("/v1/nl/products", params={"offset": 10_000}).json()["items"] == []
    for entry in first["items"][:5]:  # one entry by id is what the page shows
        assert client.get(f"/v1/nl/products/{entry['product_id']}").json() == entry


def test_the_gateway_can_serve_the_blend(client, shop):
    product = client.get("/v1/nl/products", params={"limit": 1}).json()["items"][0]["product_id"]
    variants = {}
    for visitor in range(40):
        answer = client.get(f"/v1/nl/products/{product}/gateway", params={"visitor": f"v{visitor}"}).json()
        variants[answer["variant"]] = answer["algorithm"]
    assert variants["visual_blend"] == "visual_blend" and variants["llr"] in ("llr", "popular")


def test_ready_says_which_tenants_and_whether_there_is_a_visual_index(client):
    body = client.get("/ready").json()
    assert body["tenants"] == ["be", "de", "nl"] and body["visual"] is True
