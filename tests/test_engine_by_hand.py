"""The item-item engine on a tiny event set whose every number is worked out by hand below."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest
from msgspec.structs import replace

from engine import build, config
from engine.publish import warehouse
from tests.conftest import divolte_events, write_shop_folder

# Tenant nl. After dropping flagged events and the bot session s7 (4 products > cap 3):
#   s1: A B C    s2: A B    s3: A C    s4: B C    s5: D    s6: A B D        N = 6 sessions
#   sessions per product: A 4, B 4, C 3, D 2
#   pairs: AB 3, AC 2, BC 2, AD 1, BD 1, CD 0
# Tenant be has its own session s8 with A and B, so nl's numbers must not include it.
SESSIONS = {
    "s1": "ABC",
    "s2": "AB",
    "s3": "AC",
    "s4": "BC",
    "s5": "D",
    "s6": "ABD",
    "s7": "ABCD",  # a bot: more distinct products than max_session_items
}
ITEMS = {"A": "1000001", "B": "1000002", "C": "1000003", "D": "1000004", "E": "1000005"}
N = 6
SESSIONS_PER_ITEM = {"A": 4, "B": 4, "C": 3, "D": 2}
PAIRS = {("A", "B"): 3, ("A", "C"): 2, ("B", "C"): 2, ("A", "D"): 1, ("B", "D"): 1}


def hand_events():
    rows = []
    for session, products in SESSIONS.items():
        rows.extend({"session": session, "product": ITEMS[letter]} for letter in products)
        rows.append({"session": session, "product": ITEMS[products[0]]})  # a repeat view counts once
        rows.append({"session": session, "product": None})  # a category page has no product
    rows.append({"session": "s5", "product": ITEMS["A"], "duplicate": True})  # dropped: would make s5 = A D
    rows.append({"session": "s5", "product": ITEMS["C"], "corrupt": True})  # dropped: garbled product
    rows.append({"session": "s4", "product": ITEMS["D"], "type": "scroll"})  # not a configured event type
    rows.append({"session": "s3", "product": "9999999"})  # not in the catalogue
    rows += [{"session": "s8", "product": ITEMS[x], "tenant": "be"} for x in "AB"]
    return divolte_events(rows)


def pair(a: str, b: str) -> int:
    return PAIRS.get((a, b)) or PAIRS.get((b, a)) or 0


def hand_llr(a: str, b: str) -> float:
    """G-test of the 2x2 table, written out long-hand."""
    k11 = pair(a, b)
    na, nb = SESSIONS_PER_ITEM[a], SESSIONS_PER_ITEM[b]
    cells = [(k11, nb, na), (nb - k11, nb, N - na), (na - k11, N - nb, na), (N - na - nb + k11, N - nb, N - na)]
    return 2 * sum(k * math.log(k * N / (row * column)) for k, row, column in cells if k)


@pytest.fixture(scope="module", params=["kernel-avro", "sql-avro", "kernel-parquet"])
def itemitem(request, tmp_path_factory):
    pairs, source = request.param.split("-")
    folder = tmp_path_factory.mktemp(request.param)
    path = write_shop_folder(
        folder,
        hand_events(),
        {"nl": list(ITEMS.values()), "be": [ITEMS["A"], ITEMS["B"]]},
        "top_n = 5\nmin_support = 1\nmax_session_items = 3",
    )
    cfg = config.load(path)
    if source == "parquet":
        cfg = replace(cfg, events=replace(cfg.events, avro=(), parquet=(str(folder / "events/parquet/*.parquet"),)))
    result = build.build(cfg, pairs=pairs)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        rows = connection.execute("SELECT * FROM itemitem").fetchall()
        columns = [d[0] for d in connection.description]
        counts = dict(connection.execute("SELECT product_id, sessions FROM item_counts WHERE tenant = 'nl'").fetchall())
    return result, [dict(zip(columns, row, strict=True)) for row in rows], counts


def lists(rows, algorithm, tenant="nl"):
    letter = {v: k for k, v in ITEMS.items()}
    out = {}
    for row in rows:
        if row["algorithm"] == algorithm and row["tenant"] == tenant:
            out.setdefault(letter[row["product_id"]], []).append((row["rank"], letter[row["related_product_id"]], row))
    return {k: [(name, r) for _, name, r in sorted(v, key=lambda x: x[0])] for k, v in out.items()}


def test_ingest_counts_and_drops(itemitem):
    result, _, counts = itemitem
    (stats,) = result.ingest
    assert stats["dropped_duplicate"] == 1
    assert stats["dropped_corrupt"] == 1
    assert stats["events_kept"] == stats["events_read"] - 2
    assert counts == {ITEMS[k]: v for k, v in SESSIONS_PER_ITEM.items()}


def test_cooccurrence_lists_and_tie_break(itemitem):
    got = lists(itemitem[1], "cooccurrence")
    assert [name for name, _ in got["A"]] == ["B", "C", "D"]
    # C's neighbours A and B tie at 2: the lower product id comes first.
    assert [name for name, _ in got["C"]] == ["A", "B"]
    assert [name for name, _ in got["D"]] == ["A", "B"]
    for product, related in got.items():
        for name, row in related:
            assert row["cooccurrence"] == pair(product, name)
            assert row["distance_score"] == pair(product, name)
            assert row["product_sessions"] == SESSIONS_PER_ITEM[product]
            assert row["related_sessions"] == SESSIONS_PER_ITEM[name]


def test_jaccard(itemitem):
    got = lists(itemitem[1], "jaccard")
    expected = {
        ("A", "B"): 3 / 5,
        ("A", "C"): 2 / 5,
        ("A", "D"): 1 / 5,
        ("C", "A"): 2 / 5,
        ("C", "B"): 2 / 5,
        ("D", "B"): 1 / 5,
    }
    for (a, b), value in expected.items():
        assert dict(got[a])[b]["distance_score"] == pytest.approx(value, rel=1e-15)
    assert [name for name, _ in got["C"]] == ["A", "B"]


def test_llr(itemitem):
    got = lists(itemitem[1], "llr")
    for product, related in got.items():
        for name, row in related:
            assert row["distance_score"] == pytest.approx(hand_llr(product, name), rel=1e-9, abs=1e-12)
    # A-B (3 of 4 sessions each) is more surprising than A-D (1 session, D is rare).
    assert next(name for name, _ in got["A"]) == "B"


def test_popular_baseline(itemitem):
    got = lists(itemitem[1], "popular")
    assert [name for name, _ in got["A"]] == ["B", "C", "D"]
    assert [name for name, _ in got["C"]] == ["A", "B", "D"]
    assert [row["distance_score"] for _, row in got["D"]] == [4, 4, 3]


# The sessions' steps, in event order (a repeat view later in the session is a new step; the category page,
# the dropped, foreign and non-catalogue events are none; s5's repeated D, in a row, is one step):
#   s1: A B C A    s2: A B A    s3: A C A    s4: B C B    s5: D    s6: A B D A
# Directly after: A>B 3, A>C 1, B>C 2, B>A 1, B>D 1, C>A 2, C>B 1, D>A 1.
# Up to 5 steps ahead, weighted 1/distance: A>B 3, A>C 1/2 + 1, A>D 1/2, B>C 2, B>A 1/2 + 1 + 1/2, B>D 1,
# C>A 2, C>B 1, D>A 1; before or after: AB 3 + 2, AC 1.5 + 2, AD 0.5 + 1, BC 2 + 1, BD 1. The blend adds
# 1/6 a shared session (sr_window 5: one step beyond it): AB 5 + 3/6, AC 3.5 + 2/6, AD 1.5 + 1/6, BC 3 + 2/6,
# BD 1 + 1/6, summed over the scale 60 (the least common multiple of 1..6) as the kernel and the SQL sum it.
@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("transitions", {"A": [("B", 3), ("C", 1)], "B": [("C", 2), ("A", 1), ("D", 1)], "C": [("A", 2), ("B", 1)],
                         "D": [("A", 1)]}),
        ("transitions_both", {"A": [("B", 4), ("C", 3), ("D", 1)], "B": [("A", 4), ("C", 3), ("D", 1)],
                              "C": [("A", 3), ("B", 3)], "D": [("A", 1), ("B", 1)]}),
        ("sequential_rules", {"A": [("B", 3), ("C", 1.5), ("D", 0.5)], "B": [("A", 2), ("C", 2), ("D", 1)],
                              "C": [("A", 2), ("B", 1)], "D": [("A", 1)]}),
        ("sequential_rules_both", {"A": [("B", 5), ("C", 3.5), ("D", 1.5)], "B": [("A", 5), ("C", 3), ("D", 1)],
                                   "C": [("A", 3.5), ("B", 3)], "D": [("A", 1.5), ("B", 1)]}),
        ("sequence_blend", {"A": [("B", 330 / 60), ("C", 230 / 60), ("D", 100 / 60)],
                            "B": [("A", 330 / 60), ("C", 200 / 60), ("D", 70 / 60)],
                            "C": [("A", 230 / 60), ("B", 200 / 60)], "D": [("A", 100 / 60), ("B", 70 / 60)]}),
    ],
)  # fmt: skip
def test_sequence_aware_lists(itemitem, algorithm, expected):
    got = lists(itemitem[1], algorithm)
    assert {k: [(name, row["distance_score"]) for name, row in v] for k, v in got.items()} == expected
    counted = {row["cooccurrence"] for v in got.values() for _, row in v}
    counts = {score for v in expected.values() for _, score in v}
    assert counted == ({None} if algorithm.startswith("seq") else counts)
    be = lists(itemitem[1], algorithm, tenant="be")  # s8: A then B; only the _both lists and the blend look back
    looks_back = algorithm.endswith("_both") or algorithm == "sequence_blend"
    followers = {"A": ["B"], "B": ["A"]} if looks_back else {"A": ["B"]}
    assert {k: [n for n, _ in v] for k, v in be.items()} == followers


def test_tenants_are_isolated(itemitem):
    rows = itemitem[1]
    be = lists(rows, "cooccurrence", tenant="be")
    assert {k: [n for n, _ in v] for k, v in be.items()} == {"A": ["B"], "B": ["A"]}
    assert all(r["cooccurrence"] == 1 for _, v in be.items() for _, r in v)


def test_ranks_are_dense_and_never_self(itemitem):
    rows = itemitem[1]
    groups = {}
    for row in rows:
        assert row["product_id"] != row["related_product_id"]
        groups.setdefault((row["tenant"], row["algorithm"], row["product_id"]), []).append(row["rank"])
    for ranks in groups.values():
        assert ranks == list(range(1, len(ranks) + 1))
    keys = [(r["tenant"], r["algorithm"], r["product_id"], r["rank"]) for r in rows]
    assert keys == sorted(keys)


@pytest.mark.parametrize(("look_back_days", "sees_october"), [(7, False), (0, True)])
def test_min_support_and_look_back(tmp_path, look_back_days, sees_october):
    october = [{"session": s, "product": ITEMS[x], "ts": dt.datetime(2026, 10, 1)} for s in ("o1", "o2") for x in "CD"]
    events = pa.concat_tables([divolte_events(october), hand_events()])
    path = write_shop_folder(
        tmp_path,
        events,
        {"nl": list(ITEMS.values())},
        f"min_support = 2\nmax_session_items = 3\nlook_back_days = {look_back_days}",
    )
    build.build(config.load(path))
    with warehouse.connect(tmp_path / "warehouse.duckdb", read_only=True) as connection:
        pairs = connection.execute(
            "SELECT product_id, related_product_id FROM itemitem WHERE algorithm = 'cooccurrence' AND tenant = 'nl'"
        ).fetchall()
    # Only pairs seen in >= 2 sessions: AB, AC, BC, and CD from the two October sessions, unless the
    # 7-day window before the newest event (November) leaves them out.
    expected = [("A", "B"), ("A", "C"), ("B", "C")] + ([("C", "D")] if sees_october else [])
    assert sorted(pairs) == sorted((ITEMS[a], ITEMS[b]) for x, y in expected for a, b in [(x, y), (y, x)])
