"""A synthetic fashion shop: a catalogue and a Divolte clickstream, deterministic from a seed.

Real clickstreams cannot ship with the project, but the recommenders only
show their worth on data with a real shop's structure, so the generator
builds that structure in on purpose:

* products belong to a category and, inside it, to a *look* (a few dozen
  products that are bought in the same mood: same style, mostly one colour);
  popularity is Zipf-like over looks and inside each look;
* a session browses mostly inside one look, sometimes wanders to another look
  of the same category, and now and then to anything popular;
* visitors come back for several sessions; a few countries (tenants) each
  sell a subset of the catalogue;
* noise: non-product pages, add-to-cart events, bot sessions that view
  hundreds of random products, and events that Divolte flags as duplicate or
  corrupt (corrupt ones carry a garbled product);
* a photo per product (``engine.example.pictures``): a Fashion-MNIST garment of
  its category where that dataset is installed, a drawn one otherwise, in the
  product's colour.

Everything is vectorised with NumPy and Arrow, so 20M events take seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.example import pictures
from engine.ingest import divolte

CATEGORIES: dict[str, tuple[float, float]] = {
    # name: (share of the catalogue, typical price in EUR)
    "dress": (0.10, 59.0),
    "jeans": (0.08, 69.0),
    "shirt": (0.08, 39.0),
    "t-shirt": (0.10, 19.0),
    "sweater": (0.07, 49.0),
    "jacket": (0.05, 99.0),
    "coat": (0.04, 149.0),
    "skirt": (0.05, 39.0),
    "trousers": (0.07, 55.0),
    "sneakers": (0.08, 89.0),
    "boots": (0.05, 119.0),
    "sandals": (0.03, 45.0),
    "bag": (0.07, 65.0),
    "scarf": (0.04, 25.0),
    "hat": (0.03, 22.0),
    "swimwear": (0.06, 35.0),
}
COLOURS = ["black", "white", "navy", "grey", "red", "blue", "green", "beige", "pink", "brown", "yellow", "purple"]
STYLES = ["slim", "relaxed", "classic", "oversized", "cropped", "vintage", "essential", "soft", "sport", "linen"]
TENANTS: dict[str, tuple[float, float]] = {
    # country code (also the shop's top-level domain): (share of the catalogue sold, share of traffic)
    "nl": (1.00, 0.60),
    "be": (0.70, 0.25),
    "de": (0.50, 0.15),
}
# fmt: off
_BRAND_HEADS = ["Nord", "Vel", "Mar", "Stra", "Lin", "Ko", "Bel", "Ar", "Zee", "Hol", "Dun", "Ev", "Sol", "Tess", "Wil",
                "Ro", "Fen", "Gra", "Lu", "Ost", "Pel", "Quin", "Ris", "Sa", "Tor", "Ul", "Vin", "Wes", "Yd", "Bram",
                "Cor", "Dal", "Em", "Fal", "Gil", "Hav", "Isel", "Jor", "Kes", "Lom"]
_BRAND_TAILS = ["vik", "ena", "ello", "ada", "ora", "sen", "ijn", "ard", "ino", "ette", "ix", "um", "wood", "land", "berg",
                "mond", "ers", "ia", "ano", "ique", "ey", "o", "a", "is", "ton", "ley", "field", "dale", "more", "ford",
                "gate", "wick", "stone", "bury", "lyn", "ric", "mar", "vel", "tis", "dor", "ven", "sol", "nes", "rup",
                "holm", "lund", "hoff", "kamp", "heim", "ville"]
_DEVICES = [
    # viewport w, h, screen w, h, UA name, family, vendor, type, version, device, os family, os version, os vendor
    (390, 664, 390, 844, "Mobile Safari", "Mobile Safari", "Apple Inc.", "Mobile Browser", "17.4",
     "Smartphone", "iOS", "17.4", "Apple Inc."),
    (412, 780, 412, 915, "Chrome Mobile", "Chrome Mobile", "Google Inc.", "Mobile Browser", "124.0",
     "Smartphone", "Android", "14", "Google, Inc."),
    (1536, 730, 1536, 864, "Chrome", "Chrome", "Google Inc.", "Browser", "124.0",
     "Personal computer", "Windows", "10", "Microsoft Corporation."),
    (1440, 789, 1440, 900, "Firefox", "Firefox", "Mozilla Foundation", "Browser", "125.0",
     "Personal computer", "OS X", "14.4", "Apple Computer, Inc."),
]
# fmt: on

SESSION_LOOK = 0.65
"""Chance that a product event stays inside the session's look."""
SESSION_CATEGORY = 0.20
"""Chance that it wanders to another look of the same category (the rest goes anywhere)."""


@dataclass(frozen=True)
class ShopSpec:
    """Size and seed of a generated shop. The defaults make the bundled example."""

    products: int = 3_000
    brands: int = 150
    events: int = 150_000
    days: int = 28
    seed: int = 7
    start: dt.date = dt.date(2026, 10, 1)
    look_size: int = 30
    mean_session_length: float = 6.0
    bot_share: float = 0.002
    duplicate_share: float = 0.01
    corrupt_share: float = 0.005
    page_share: float = 0.12
    cart_share: float = 0.06


@dataclass(frozen=True)
class Shop:
    """A generated shop: catalogue rows per tenant, Divolte events (in generation order), and each product's picture.

    :func:`write_shop` writes the events in time order; sorting 20M wide rows
    in memory at once would double the generator's footprint.
    """

    catalogue: pa.Table
    events: pa.Table
    images: pictures.ImagePlan


def generate(spec: ShopSpec) -> Shop:
    """Generate the catalogue and clickstream described by ``spec``."""
    rng = np.random.default_rng(spec.seed)
    products = _products(spec, rng)
    events = _events(spec, products, rng)
    names = np.array(list(CATEGORIES))
    images = pictures.plan(products.ids, names[products.category], products.colour, spec.seed)
    return Shop(catalogue=_catalogue(products, images), events=events, images=images)


@dataclass(frozen=True)
class _Products:
    ids: np.ndarray  # product id strings (7 digits), one per product
    category: np.ndarray  # index into CATEGORIES
    look: np.ndarray  # global look index; looks never span categories
    brand: np.ndarray  # brand name per product
    colour: np.ndarray
    style: np.ndarray
    price: np.ndarray
    sold_in: dict[str, np.ndarray]  # tenant -> boolean mask


def _products(spec: ShopSpec, rng: np.random.Generator) -> _Products:
    n = spec.products
    ids = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    names = list(CATEGORIES)
    shares = np.array([share for share, _ in CATEGORIES.values()])
    category = rng.choice(len(names), size=n, p=shares / shares.sum())

    # Looks: consecutive blocks of look_size products inside each category.
    look = np.empty(n, dtype=np.int64)
    next_look = 0
    for c in range(len(names)):
        members = np.flatnonzero(category == c)
        look[members] = next_look + np.arange(members.size) // spec.look_size
        next_look += -(-members.size // spec.look_size)

    brand_names = np.array(_brand_names(spec.brands, rng))
    brand_weight = 1.0 / np.arange(1, spec.brands + 1) ** 1.1
    brand = brand_names[rng.choice(spec.brands, size=n, p=brand_weight / brand_weight.sum())]

    look_colour = rng.integers(len(COLOURS), size=next_look)
    own_colour = rng.integers(len(COLOURS), size=n)
    colour = np.where(rng.random(n) < 0.7, look_colour[look], own_colour)
    style = rng.integers(len(STYLES), size=next_look)[look]

    base = np.array([price for _, price in CATEGORIES.values()])[category]
    price = np.round(np.maximum(4.0, base * np.exp(0.35 * rng.standard_normal(n)))) - 0.05

    sold_in = {tenant: rng.random(n) < share for tenant, (share, _) in TENANTS.items()}
    return _Products(
        ids=np.char.mod("%07d", ids),
        category=category,
        look=look,
        brand=brand,
        colour=np.array(COLOURS)[colour],
        style=np.array(STYLES)[style],
        price=price,
        sold_in=sold_in,
    )


def _brand_names(count: int, rng: np.random.Generator) -> list[str]:
    all_names = [head + tail for head in _BRAND_HEADS for tail in _BRAND_TAILS]
    if count > len(all_names):
        msg = f"at most {len(all_names)} brand names can be generated, {count} were asked for"
        raise ValueError(msg)
    return [all_names[i] for i in rng.choice(len(all_names), size=count, replace=False)]


def _catalogue(products: _Products, images: pictures.ImagePlan) -> pa.Table:
    names = np.array(list(CATEGORIES))
    titles = np.char.add(
        np.char.add(np.char.add(np.char.add(products.brand, " "), products.style), " "),
        np.char.add(np.char.add(products.colour, " "), names[products.category]),
    )
    paths = np.array([images.path(product) for product in products.ids])
    parts = []
    for tenant in TENANTS:
        sold = products.sold_in[tenant]
        parts.append(
            pa.table(
                {
                    "tenant": pa.array([tenant] * int(sold.sum()), pa.string()),
                    "product_id": products.ids[sold],
                    "title": titles[sold],
                    "brand": products.brand[sold],
                    "category": names[products.category[sold]],
                    "colour": products.colour[sold],
                    "price": products.price[sold],
                    "image": paths[sold],
                }
            )
        )
    catalogue = pa.concat_tables(parts)
    return catalogue.sort_by([("tenant", "ascending"), ("product_id", "ascending")])


def _events(spec: ShopSpec, products: _Products, rng: np.random.Generator) -> pa.Table:
    expected_length = spec.mean_session_length / (1.0 - spec.page_share)
    total_sessions = max(len(TENANTS), int(spec.events / (expected_length * (1 + spec.duplicate_share))))
    parts = []
    first_session = 0
    for tenant, (_, traffic) in TENANTS.items():
        sessions = max(1, round(total_sessions * traffic))
        parts.append(_tenant_events(spec, products, tenant, sessions, first_session, rng))
        first_session += sessions
    return pa.concat_tables(parts)


def _tenant_events(
    spec: ShopSpec, products: _Products, tenant: str, sessions: int, first_session: int, rng: np.random.Generator
) -> pa.Table:
    sold = np.flatnonzero(products.sold_in[tenant])
    order = np.lexsort((sold, products.look[sold]))
    members = sold[order]  # products sold here, grouped by look
    looks, look_start, look_size = np.unique(products.look[members], return_index=True, return_counts=True)
    look_category = products.category[members[look_start]]
    category_first_look = np.searchsorted(look_category, np.arange(len(CATEGORIES)))
    category_looks = np.bincount(look_category, minlength=len(CATEGORIES))
    look_weight = 1.0 / rng.permutation(np.arange(1, looks.size + 1)) ** 0.9
    look_cdf = np.cumsum(look_weight) / look_weight.sum()

    def popular_look(k: int) -> np.ndarray:
        return np.minimum(np.searchsorted(look_cdf, rng.random(k)), looks.size - 1)

    def pick_in_look(look: np.ndarray) -> np.ndarray:
        position = (look_size[look] * rng.random(look.size) ** 2.0).astype(np.int64)
        return members[look_start[look] + position]

    # Sessions: a look, a length, a visitor, a start time, a bot flag.
    bot = rng.random(sessions) < spec.bot_share
    length = np.where(bot, rng.integers(150, 600, sessions), rng.geometric(1.0 / spec.mean_session_length, sessions))
    session_look = popular_look(sessions)
    visitors = max(1, int(sessions / 2.5))
    visitor = rng.integers(visitors, size=sessions)
    hour_weight = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 6, 6, 6, 7, 8, 10, 11, 10, 7, 3], dtype=float)
    start = (
        np.datetime64(spec.start, "ms")
        + rng.integers(spec.days, size=sessions).astype("timedelta64[D]")
        + rng.choice(24, size=sessions, p=hour_weight / hour_weight.sum()).astype("timedelta64[h]")
        + rng.integers(3_600_000, size=sessions).astype("timedelta64[ms]")
    )

    # Events: repeat the session attributes, then draw a product per event.
    n = int(length.sum())
    session = np.repeat(np.arange(sessions), length)
    first = np.zeros(n, dtype=bool)
    first[np.cumsum(length) - length] = True
    gaps = np.where(first, 0.0, rng.exponential(45_000.0, n))
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[first], length)
    timestamp = np.repeat(start, length) + elapsed.astype("timedelta64[ms]")

    wander = rng.random(n)
    look = session_look[session].copy()
    in_category = (wander >= SESSION_LOOK) & (wander < SESSION_LOOK + SESSION_CATEGORY)
    category = look_category[look[in_category]]
    look[in_category] = category_first_look[category] + (
        category_looks[category] * rng.random(category.size) ** 1.5
    ).astype(np.int64)
    anywhere = wander >= SESSION_LOOK + SESSION_CATEGORY
    look[anywhere] = popular_look(int(anywhere.sum()))
    product = pick_in_look(look)
    is_bot_event = bot[session]
    product[is_bot_event] = rng.choice(members, size=int(is_bot_event.sum()))
    is_page = (rng.random(n) < spec.page_share) & ~first

    corrupt = rng.random(n) < spec.corrupt_share
    product[corrupt] = rng.choice(members, size=int(corrupt.sum()))
    event_type = _pick(["pageView", "addToCart"], ~is_page & (rng.random(n) < spec.cart_share))

    host = f"https://www.etalage.{tenant}/"
    category_name = _pick(list(CATEGORIES), products.category[product])
    product_page = pc.binary_join_element_wise(host + "p/", _pick(products.ids, product), "/", category_name, "/", "")
    other_page = pc.binary_join_element_wise(host + "c/", category_name, "/", "")
    location = pc.if_else(pa.array(is_page), other_page, product_page)
    if isinstance(location, pa.ChunkedArray):  # large inputs come back chunked
        location = location.combine_chunks()
    previous = pa.concat_arrays([pa.array([None], pa.string()), location.slice(0, n - 1)])
    referer = pc.if_else(pa.array(first), pa.scalar(f"https://www.google.{tenant}/"), previous)

    device = visitor % len(_DEVICES)
    columns = {
        "detectedDuplicate": np.zeros(n, dtype=bool),
        "detectedCorruption": corrupt,
        "firstInSession": first,
        "timestamp": timestamp,
        "clientTimestamp": timestamp - rng.integers(0, 2_000, n).astype("timedelta64[ms]"),
        "remoteHost": _join("203.0.113.", visitor[session] % 254 + 1),
        "referer": referer,
        "location": location,
        **{
            name: np.array([d[i] for d in _DEVICES], dtype=np.int32)[device[session]]
            for i, name in enumerate(divolte._SIZES)
        },
        "partyId": _join(f"0:{tenant}", visitor[session]),
        "sessionId": _join("0:s", session + first_session),
        "pageViewId": _join(f"0:p{tenant}", np.arange(n)),
        "eventType": event_type,
        "userAgentString": _pick([f"Mozilla/5.0 ({d[4]} {d[8]}; {d[10]} {d[11]})" for d in _DEVICES], device[session]),
        **{
            name: _pick([d[4 + i] for d in _DEVICES], device[session])
            for i, name in enumerate(divolte._USER_AGENT_FIELDS[1:])
        },
    }
    events = pa.table(columns).cast(divolte.ARROW_SCHEMA)
    duplicate = np.flatnonzero(rng.random(n) < spec.duplicate_share)
    copies = events.take(duplicate).set_column(
        0, divolte.ARROW_SCHEMA.field("detectedDuplicate"), pa.array(np.ones(duplicate.size, dtype=bool))
    )
    return pa.concat_tables([events, copies])


def _pick(values, index: np.ndarray) -> pa.Array:
    """``values[index]`` as an Arrow string array, without NumPy's fixed-width strings (20M rows of them are GBs)."""
    return pa.array(values, pa.string()).take(pa.array(index.astype(np.int64)))


def _join(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def write_shop(
    shop: Shop,
    directory: Path,
    formats: tuple[str, ...] = ("avro", "parquet"),
    progress: Callable[[int], None] = lambda done: None,
    images: bool = True,
) -> None:
    """Write ``shop`` under ``directory`` the way the shop's pipeline would find it.

    * ``catalogue.parquet``: one row per product and tenant; its ``image``
      column is the product's picture, relative to ``directory``;
    * ``images/<product_id>.png``: one picture per product (unless ``images``
      is False: the benchmark's 180,000-product shops need none);
    * ``events/avro/YYYY/MM/DD/HH/divolte-tracking-0.avro``: hour-partitioned
      like Divolte's HDFS sink;
    * ``events/parquet/date=YYYY-MM-DD/events.parquet``: the same events as
      Parquet, one file per day.

    Events are written in time order (a stable sort, so ties keep generation
    order and the files are deterministic). ``progress`` is called with the
    number of events written so far, counting each format's copy.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(shop.catalogue, directory / "catalogue.parquet")
    if images:
        pictures.write(shop.images, directory)
    millis = shop.events.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.argsort(millis, kind="stable")
    hour = millis[order] // 3_600_000
    day = hour // 24
    written = 0
    if "avro" in formats:
        for begin, end in _runs(hour):
            folder = _utc(hour[begin] * 3600).strftime("%Y/%m/%d/%H")
            divolte.write_avro(
                shop.events.take(order[begin:end]), directory / "events" / "avro" / folder / "divolte-tracking-0.avro"
            )
            written += end - begin
            progress(written)
    if "parquet" in formats:
        for begin, end in _runs(day):
            path = directory / "events" / "parquet" / f"date={_utc(day[begin] * 86_400):%Y-%m-%d}" / "events.parquet"
            divolte.write_parquet(shop.events.take(order[begin:end]), path)
            written += end - begin
            progress(written)


def _utc(seconds: np.integer) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC)


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """(begin, end) of each run of equal values in a sorted array."""
    starts = np.flatnonzero(np.diff(keys, prepend=keys[0] - 1, append=keys[-1] + 1))
    return list(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True))
