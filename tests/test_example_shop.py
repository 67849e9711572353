"""The generator: deterministic, and shaped like a real fashion shop's clickstream."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from engine.example import generator
from tests.conftest import SMALL_SHOP


@pytest.fixture(scope="module")
def shop():
    return generator.generate(SMALL_SHOP)


def test_same_seed_same_shop_other_seed_other_shop(shop):
    again = generator.generate(SMALL_SHOP)
    assert again.catalogue.equals(shop.catalogue)
    assert again.events.equals(shop.events)
    other = generator.generate(generator.ShopSpec(**{**SMALL_SHOP.__dict__, "seed": SMALL_SHOP.seed + 1}))
    assert not other.events.equals(shop.events)


def test_catalogue_has_every_column_and_several_tenants(shop):
    catalogue = shop.catalogue
    assert catalogue.column_names == ["tenant", "product_id", "title", "brand", "category", "colour", "price", "image"]
    tenants = pc.value_counts(catalogue.column("tenant")).to_pylist()
    assert {t["values"] for t in tenants} == set(generator.TENANTS)
    assert pc.min(catalogue.column("price")).as_py() > 0


def test_clickstream_structure(shop):
    events = shop.events.to_pydict()
    locations = np.array(events["location"], dtype=object)
    sessions = np.array(events["sessionId"], dtype=object)
    products = np.array([loc.split("/p/")[1].split("/")[0] if "/p/" in loc else "" for loc in locations], dtype=object)
    is_product = products != ""

    # Zipf-like popularity: the top 1% of products get a large share of product views.
    _, counts = np.unique(products[is_product], return_counts=True)
    counts = np.sort(counts)[::-1]
    assert counts[: max(1, len(counts) // 100)].sum() / counts.sum() > 0.08

    # Sessions stay mostly inside one category: the modal category covers most of a session's views.
    categories = np.array([loc.split("/")[-2] for loc in locations], dtype=object)
    shares = []
    for session in np.unique(sessions[is_product])[:500]:
        mask = (sessions == session) & is_product
        if mask.sum() >= 3:
            _, c = np.unique(categories[mask], return_counts=True)
            shares.append(c.max() / c.sum())
    assert np.mean(shares) > 0.7

    # Visitors come back: some parties have several sessions.
    party_sessions = {}
    for party, session in zip(events["partyId"], events["sessionId"], strict=True):
        party_sessions.setdefault(party, set()).add(session)
    assert sum(len(s) > 1 for s in party_sessions.values()) > 0.3 * len(party_sessions)

    # Noise: flagged events, add-to-cart events, non-product pages, and a few huge (bot) sessions.
    assert 0.005 < np.mean(events["detectedDuplicate"]) < 0.02
    assert 0.002 < np.mean(events["detectedCorruption"]) < 0.01
    assert "addToCart" in set(events["eventType"])
    assert 0.05 < 1 - is_product.mean() < 0.2
    _, per_session = np.unique(sessions, return_counts=True)
    assert per_session.max() >= 150
    assert np.median(per_session) < 10


def test_written_files_follow_divoltes_layout(small_shop):
    hours = sorted(
        p.relative_to(small_shop / "events" / "avro") for p in (small_shop / "events" / "avro").rglob("*.avro")
    )
    assert len(hours) > 24
    assert all(len(p.parts) == 5 and p.name == "divolte-tracking-0.avro" for p in hours)
    days = sorted((small_shop / "events" / "parquet").glob("date=*/events.parquet"))
    assert len(days) == SMALL_SHOP.days
