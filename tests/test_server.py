"""The Litestar app through Litestar's test client: answers, PlanOut assignment, bad input, metrics, schema."""

from __future__ import annotations

import hashlib
import os
import random
import re
from urllib.parse import parse_qsl, quote

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from litestar.testing import TestClient
from msgspec.structs import replace

from engine import config, sqlfiles
from engine.config import Experiment, Variant
from engine.pipeline import evaluation
from engine.publish import snapshot, warehouse
from server import assignment, query
from server.app import GatewayAnswer, Recommendations, create_app
from server.lookup import Problem
from server.reader import Recommendation, ServedSnapshot
from tests.conftest import copy_built, tiny_tables


@pytest.fixture(scope="module")
def shop(built_small_shop, tmp_path_factory) -> config.Config:
    """A built copy of the small shop (one live snapshot)."""
    return config.load(copy_built(built_small_shop, tmp_path_factory.mktemp("server")) / "etalage.toml")


@pytest.fixture(scope="module")
def client(shop):
    with TestClient(create_app(shop)) as client:
        yield client


def expected(shop: config.Config, tenant: str, algorithm: str, product: str, limit: int) -> list[dict]:
    """The talk's Cassandra query, against the warehouse."""
    with warehouse.connect(shop.warehouse, read_only=True) as connection:
        rows = connection.execute(
            "SELECT related_product_id, rank, distance_score FROM itemitem "
            "WHERE tenant = $t AND algorithm = $a AND product_id = $p ORDER BY rank LIMIT $n",
            {"t": tenant, "a": algorithm, "p": product, "n": limit},
        ).fetchall()
    return [{"product_id": p, "rank": r, "score": s} for p, r, s in rows]


def sample_products(shop: config.Config, count: int) -> list[tuple[str, str]]:
    with warehouse.connect(shop.warehouse, read_only=True) as connection:
        return connection.execute(
            "SELECT DISTINCT tenant, product_id FROM itemitem WHERE algorithm = 'llr' ORDER BY ALL LIMIT $n",
            {"n": count},
        ).fetchall()


def test_planout_test_vector():
    # PlanOut's own: experiment salt 'test_salt', unit 4, UniformChoice(['a', 'b']) under three parameter names.
    picks = {name: assignment.uniform_choice(["a", "b"], "test_salt", name, 4) for name in ("foo", "bar", "baz")}
    assert picks == {"foo": "b", "bar": "a", "baz": "a"}


def test_weighted_choice_and_bernoulli_follow_planouts_scaled_hash():
    for visitor in ("0:a", "0:b", "v-42", "x"):
        digest = int(hashlib.sha1(f"exp.variant.{visitor}".encode()).hexdigest()[:15], 16)
        draw = digest / 0xFFFFFFFFFFFFFFF
        # Weights 1 and 3: the first choice up to a quarter of the way, the second after it.
        assert assignment.weighted_choice(["a", "b"], [1, 3], "exp", "variant", visitor) == (
            "a" if 4 * draw <= 1 else "b"
        )
        assert assignment.bernoulli_trial(0.3, "exp", "variant", visitor) == (1 if draw <= 0.3 else 0)
    shares = [assignment.weighted_choice(["a", "b"], [1, 3], "exp", "variant", f"v{i}") for i in range(20_000)]
    assert shares.count("a") / len(shares) == pytest.approx(0.25, abs=0.015)


def test_the_gateways_assignment_is_planouts_weighted_choice_over_the_variants():
    experiment = Experiment("exp", variants=(Variant("a", "llr", weight=1), Variant("b", "jaccard", weight=3)))
    for visitor in (f"0:{i}" for i in range(5_000)):
        chosen = assignment.weighted_choice(experiment.variants, [1, 3], "exp", "variant", visitor)
        assert assignment.assign(experiment, visitor) is chosen


def test_changing_other_config_never_reshuffles_visitors():
    visitors = [f"0:{i}" for i in range(2_000)]
    running = Experiment("homepage", variants=(Variant("llr", "llr"), Variant("cooc", "cooccurrence")))
    before = [assignment.assign(running, v).name for v in visitors]
    # A different fallback, another algorithm behind a variant name: the same people, the same variant names.
    edited = Experiment(
        "homepage", variants=(Variant("llr", "jaccard", fallback=None), Variant("cooc", "cooccurrence"))
    )
    assert [assignment.assign(edited, v).name for v in visitors] == before
    renamed = Experiment("homepage-2", variants=running.variants)
    moved = sum(a != b for a, b in zip(before, (assignment.assign(renamed, v).name for v in visitors), strict=True))
    assert 800 < moved < 1200  # a new experiment reshuffles about half


@pytest.mark.slow
def test_recommendations_are_the_warehouses_top_n(shop, client):
    for tenant, product in sample_products(shop, 25):
        for algorithm, limit in (("llr", 5), ("cooccurrence", 20), ("jaccard", 1), ("popular", 3)):
            response = client.get(
                f"/v1/{tenant}/products/{product}/recommendations", params={"algorithm": algorithm, "limit": limit}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["items"] == expected(shop, tenant, algorithm, product, limit)
            assert (body["tenant"], body["product_id"], body["algorithm"]) == (tenant, product, algorithm)
            # The body is sliced from the snapshot's JSON, not encoded from the type: it must still be that type.
            assert response.headers["content-type"] == "application/json"
            assert msgspec.json.decode(response.content, type=Recommendations).items[:1] == [
                Recommendation(**item) for item in body["items"][:1]
            ]
    default = client.get(f"/v1/{tenant}/products/{product}/recommendations").json()
    served = snapshot.live(shop.snapshots.root).served_algorithm  # gate_algorithm = "auto": the build's best
    assert default["algorithm"] == served and default["items"] == expected(shop, tenant, served, product, 5)


def test_gateway_answers_from_the_visitors_variant_and_says_so(shop, client):
    tenant, product = sample_products(shop, 1)[0]
    seen = set()
    for i in range(40):
        visitor = f"0:visitor-{i}"
        response = client.get(f"/v1/{tenant}/products/{product}/gateway", params={"visitor": visitor, "limit": 4})
        body = response.json()
        assert response.headers["etalage-variant"] == body["variant"]
        variant = assignment.assign(shop.experiment, visitor)
        assert (body["experiment"], body["variant"], body["algorithm"]) == (
            "recommendations",
            variant.name,
            variant.algorithm,
        )
        assert body["items"] == expected(shop, tenant, variant.algorithm, product, 4)
        assert body["snapshot"] == client.app.state.live.get().build_id and len(body["exposure_id"]) == 32
        assert msgspec.json.decode(response.content, type=GatewayAnswer).visitor == visitor
        seen.add(body["variant"])
    assert seen == {"llr", "cooccurrence"}


def test_a_product_without_a_list_gets_the_fallback(shop, client):
    with warehouse.connect(shop.warehouse, read_only=True) as connection:
        tenant, product = connection.execute(
            "SELECT tenant, product_id FROM itemitem GROUP BY ALL "
            "HAVING count(*) FILTER (WHERE algorithm = 'llr') = 0 AND count(*) FILTER (WHERE algorithm = 'popular') > 0 "
            "ORDER BY ALL LIMIT 1"
        ).fetchone()
    body = client.get(f"/v1/{tenant}/products/{product}/gateway", params={"visitor": "0:x"}).json()
    assert body["fallback_used"] is True and body["algorithm"] == "popular"
    assert body["items"] == expected(shop, tenant, "popular", product, 5)


@pytest.mark.parametrize(
    ("url", "status", "fragment"),
    [
        ("/v1/nl/products/0000000/recommendations", 404, "not in tenant 'nl''s catalogue"),
        ("/v1/zz/products/1/recommendations", 404, "unknown tenant 'zz'"),
        ("/v1/NL/products/1/recommendations", 400, "tenant must be"),
        ("/v1/nl/products/1'%20OR%201=1--/recommendations", 400, "product_id must be"),
        ("/v1/nl/products/" + "9" * 65 + "/recommendations", 400, "product_id must be"),
        ("/v1/nl/products/%2e%2e%2fetc/recommendations", 404, "Not Found"),  # the decoded "/" matches no route
        ("/v1/nl/products/{p}/recommendations?limit=0", 400, "limit"),
        ("/v1/nl/products/{p}/recommendations?limit=-5", 400, "limit"),
        ("/v1/nl/products/{p}/recommendations?limit=101", 400, "limit"),
        ("/v1/nl/products/{p}/recommendations?limit=99999999999999999999999999", 400, "limit"),
        ("/v1/nl/products/{p}/recommendations?limit=five", 400, "limit"),
        ("/v1/nl/products/{p}/recommendations?algorithm=visual'", 400, "unknown algorithm"),
        ("/v1/nl/products/{p}/gateway", 400, "visitor"),
        ("/v1/nl/products/{p}/gateway?visitor=" + "v" * 129, 400, "visitor must be"),
        ("/v1/nl/products/{p}/gateway?visitor=%00%ff", 400, "visitor must be"),
        ("/v2/nl/products/{p}/recommendations", 404, "Not Found"),
        ("/v1/nl/products/{p}/recommendations?limit=3&limit=5", 400, "query parameter 'limit' is given more than once"),
        ("/v1/nl/products/{p}/recommendations?algorithm=llr&algorith%6D=jaccard", 400, "'algorithm' is given more"),
        ("/v1/nl/products/{p}/gateway?visitor=a&visitor=b", 400, "query parameter 'visitor' is given more than once"),
        ("/v1/nl/products/{p}/gateway?visitor=a&visito%72=b", 400, "query parameter 'visitor' is given more than once"),
        ("/v1/nl/products/{p}/gateway?visitor=a&limit=0", 400, "Expected `int` >= 1"),
        ("/v1/nl/products/{p}/gateway?visitor=a&limit=101", 400, "Expected `int` <= 100"),
        ("/v1/nl/products/{p}/gateway?visitor=a&limit=05", 400, "Expected `int`, got `str`"),
        ("/v1/nl/products/{p}/gateway?visitor=a&limit=", 400, "Expected `int`, got `str`"),
        ("/v1/nl/products/{p}/gateway?visitor=a&visit=1,x'", 400, "each product id must be"),
    ],
)
def test_bad_requests_get_a_json_4xx_that_says_why(shop, client, url, status, fragment):
    product = next(p for t, p in sample_products(shop, 10_000) if t == "nl")
    response = client.get(url.replace("{p}", product))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert fragment in response.json()["detail"] + str(response.json().get("extra", ""))


def test_the_gateway_reads_its_query_as_litestar_reads_the_others(shop, client):
    """It parses its own query (server.query): limits, decoding and errors are the same as the routes Litestar reads."""
    tenant, product = sample_products(shop, 1)[0]
    path = f"/v1/{tenant}/products/{product}"
    for asked, same in (("limit=3", "limit=3"), ("lim%69t=3&&", "limit=3"), ("limit=3.0", "limit=3"), ("", "")):
        gateway = client.get(f"{path}/gateway?visitor=0:a&{asked}").json()
        recommendations = client.get(f"{path}/recommendations?algorithm={gateway['algorithm']}&{same}").json()
        assert gateway["items"] == recommendations["items"]
    for bad in ("0", "101", "five", "05", "+5", "%205", "", "1_0"):
        gateway = client.get(f"{path}/gateway?visitor=0:a&limit={bad}")
        recommendations = client.get(f"{path}/recommendations?limit={bad}")
        assert gateway.status_code == recommendations.status_code == 400
        assert gateway.json()["extra"] == recommendations.json()["extra"], bad
        assert gateway.json()["detail"] == f"Validation failed for GET {path}/gateway?visitor=0:a&limit={bad}"


def test_query_parameters_are_decoded_as_parse_qsl_decodes_them():
    rng = random.Random(11)
    alphabet = ["a", "b", "=", "&", "%", "+", "%41", "%2", "%ff", "%26", "%3D", "é", "\x00", " ", ";"]
    for _ in range(3000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))).encode("utf-8")
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, separator="&")
        names = [name for name, _ in pairs]
        if len(set(names)) < len(names):
            with pytest.raises(query.Repeated):
                query.parameters(raw)
        else:
            assert query.parameters(raw) == dict(pairs), raw


def test_hostile_values_never_cause_a_500(client):
    rng = random.Random(5)
    alphabet = "aZ9_-:.'\";%/\\\x00é漢 <>{}()*&|`$"
    for _ in range(300):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 90)))
        for url, params in (
            ("/v1/nl/products/{}/recommendations", {"limit": value[:5], "algorithm": value}),
            ("/v1/{}/products/1/gateway", {"visitor": value}),
        ):
            response = client.get(url.format(quote(value, safe="")), params=params)
            assert 400 <= response.status_code < 500, (value, response.text)


def test_health_readiness_metrics_and_openapi(shop, client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["snapshot"] == client.app.state.live.get().build_id and ready["age_seconds"] >= 0
    tenant, product = sample_products(shop, 1)[0]
    client.get(f"/v1/{tenant}/products/{product}/gateway", params={"visitor": "0:metrics"})
    text = client.get("/metrics").text
    assert 'etalage_requests_total{route="/v1/{tenant}/products/{product_id}/gateway",status="200",variant="' in text
    assert "etalage_request_seconds_bucket" in text
    assert f'etalage_snapshot_info{{build_id="{ready["snapshot"]}",pid="{os.getpid()}"}} 1.0' in text
    assert "etalage_snapshot_age_seconds" in text
    swagger = client.get("/schema/swagger").text
    assert "cdn" not in swagger.lower()  # the UI comes from the package: the page works offline
    for url in re.findall(r"""(?:src|href)=["'](/[^"']+)""", swagger):
        assert client.get(url).status_code == 200 and len(client.get(url).content) > 500, url
    schema = client.get("/schema/openapi.json").json()
    for route, answer in (("recommendations", "Recommendations"), ("gateway", "GatewayAnswer")):
        documented = schema["paths"][f"/v1/{{tenant}}/products/{{product_id}}/{route}"]["get"]
        assert documented["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{answer}"
        }
        assert {"tenant", "product_id", "limit"} <= {p["name"] for p in documented["parameters"]}
    gateway = schema["paths"]["/v1/{tenant}/products/{product_id}/gateway"]["get"]["parameters"]
    queried = {p["name"]: p for p in gateway if p["in"] == "query"}
    assert set(queried) == {"visitor", "limit", "visit"} and queried["visitor"]["required"]
    assert queried["limit"]["schema"] | {"description": ""} == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 5,
        "description": "",
    }
    assert set(schema["components"]["schemas"]["Recommendations"]["properties"]) == {
        "tenant",
        "product_id",
        "algorithm",
        "snapshot",
        "items",
    }


def test_the_openapi_document_lists_each_routes_error_answers_as_they_are_sent(shop, client):
    schema = client.get("/schema/openapi.json").json()
    documented = {
        (method.upper(), path): set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    lookups = {"200", "400", "404", "503"}
    assert documented == {
        ("GET", "/health"): {"200"},
        ("GET", "/ready"): {"200", "503"},
        ("GET", "/v1/{tenant}/products/{product_id}/recommendations"): lookups,
        ("GET", "/v1/{tenant}/products/{product_id}/gateway"): lookups,
        ("GET", "/v1/{tenant}/products"): lookups,
        ("GET", "/v1/{tenant}/products/{product_id}"): lookups,
        ("GET", "/v1/{tenant}/products/{product_id}/image"): lookups,
        ("GET", "/v1/{tenant}/sessions/recommendations"): lookups,
        ("GET", "/v1/{tenant}/products/{product_id}/visually-similar"): lookups,
        ("POST", "/v1/{tenant}/images/similar"): lookups | {"413", "422"},
        ("GET", "/v1/{tenant}/search"): lookups,
    }
    assert set(schema["components"]["schemas"]["Problem"]["required"]) == {"status_code", "detail"}
    answer = client.get("/v1/nl/products/0000000/recommendations")
    problem = msgspec.json.decode(answer.content, type=Problem)  # the body is what the document says
    assert problem.status_code == answer.status_code == 404 and "0000000" in problem.detail
    with TestClient(
        create_app(replace(shop, snapshots=replace(shop.snapshots, root=shop.warehouse.parent / "none")))
    ) as empty:
        answer = empty.get("/v1/nl/products/1/gateway", params={"visitor": "v"})
        assert msgspec.json.decode(answer.content, type=Problem).status_code == answer.status_code == 503


def test_without_a_snapshot_the_server_is_up_but_not_ready(shop, tmp_path):
    empty = replace(shop, snapshots=replace(shop.snapshots, root=tmp_path / "none"))
    with TestClient(create_app(empty)) as client:
        assert client.get("/health").status_code == 200
        response = client.get("/ready")
        assert response.status_code == 503 and "run `etalage build`" in response.json()["detail"]
        assert client.get("/v1/nl/products/1/recommendations").status_code == 503


def test_exposures_are_flushed_as_whole_parquet_files(shop, tmp_path):
    # A log of its own, whose loop does not tick during the test: a timed flush would split the records in two files.
    folder = tmp_path / "exposures"
    quiet = replace(shop, serving=replace(shop.serving, exposures=folder, flush_seconds=3600.0))
    tenant, product = sample_products(shop, 1)[0]
    with TestClient(create_app(quiet)) as client:
        log = client.app.state.exposures
        for i in range(3):
            client.get(f"/v1/{tenant}/products/{product}/gateway", params={"visitor": f"0:exp{i}"})
        written = log.flush()
        assert written is not None and set(folder.rglob("*.parquet")) == {written}
        assert not list(folder.rglob(".*"))
    rows = pq.read_table(written).to_pylist()
    assert [r["visitor"] for r in rows] == ["0:exp0", "0:exp1", "0:exp2"]
    assert all(r["tenant"] == tenant and r["product_id"] == product and r["shown"] for r in rows)


def test_every_list_reads_back_exactly_even_across_record_batches(shop, tmp_path):
    live = (shop.snapshots.root / "current").resolve()
    served_rows, lists, products = (
        snapshot.read_table(live / f"{name}.arrow") for name in ("itemitem", "lists", "products")
    )
    with warehouse.connect(shop.warehouse, read_only=True) as connection:
        rows = connection.table("itemitem").to_arrow_table()  # the same rows, with their keys
    # Batches of 997 rows cut many lists in two: the reader's slow path must give the same rows as its fast one.
    tables = {
        "itemitem": lambda: pa.RecordBatchReader.from_batches(
            served_rows.schema, served_rows.to_batches(max_chunksize=997)
        ),
        "lists": lambda: pa.RecordBatchReader.from_batches(lists.schema, lists.to_batches(max_chunksize=991)),
        "products": lambda: products.to_reader(),
    }
    served = ServedSnapshot(snapshot.stage(tmp_path, "small-batches", tables, {}).path)
    expected: dict[tuple, list] = {}
    for row in rows.to_pylist():
        key = (row["tenant"], row["algorithm"], row["product_id"])
        expected.setdefault(key, []).append(
            Recommendation(row["related_product_id"], row["rank"], row["distance_score"])
        )
    spanning = [
        r for r in lists.to_pylist() if r["rows"] and r["first_row"] // 997 != (r["first_row"] + r["rows"] - 1) // 997
    ]
    assert len(spanning) > 10
    for (tenant, algorithm, product), items in expected.items():
        assert served.recommendations(tenant, algorithm, product, 100) == items
        assert served.recommendations(tenant, algorithm, product, 2) == items[:2]
    listed = {(r["tenant"], r["algorithm"], r["product_id"]) for r in lists.to_pylist() if r["rows"]}
    assert listed == {key for key in expected if served.has_product(key[0], key[2])}
    tenant, product = next((t, p) for (t, a, p) in expected if a == "llr")
    assert served.items_json(tenant, "no-such-algorithm", product, 5) == b"[]"
    assert served.items_json(tenant, "llr", "no-such-product", 5) is None
    assert served.items_json(tenant, "llr", product, 0) == b"[]"


def test_without_a_visual_index_the_visual_endpoints_say_how_to_get_one(client):
    product = sample_products_of(client)
    for answer in (
        client.get(f"/v1/nl/products/{product}/visually-similar"),
        client.post("/v1/nl/images/similar", content=b"\x89PNG"),
        client.get("/v1/nl/search", params={"q": "dress"}),
    ):
        assert answer.status_code == 503, answer.text
        assert "has no visual index: set [visual] enabled = true and rebuild" in answer.json()["detail"]
    assert client.get("/ready").json()["visual"] is False


def test_the_demo_page_is_served(client):
    page = client.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Looks like this" in page.text and "Viewed together" in page.text


def sample_products_of(client) -> str:
    return client.get("/v1/nl/products", params={"limit": 1}).json()["items"][0]["product_id"]


def test_a_new_snapshot_with_the_same_catalogue_keeps_the_product_index(shop, tmp_path):
    live = (shop.snapshots.root / "current").resolve()
    first = ServedSnapshot(live)
    again = ServedSnapshot(live, previous=first)
    assert again._product_rows is first._product_rows  # same products.arrow sha256: nothing rebuilt
    tables = {name: snapshot.read_table(live / f"{name}.arrow").to_reader for name in ("itemitem", "lists")}
    products = snapshot.read_table(live / "products.arrow")
    # The same rows with one more column: a different file, so the index is built again, and equal.
    changed = snapshot.stage(
        tmp_path,
        "changed",
        {**tables, "products": products.append_column("note", pa.array(["x"] * products.num_rows)).to_reader},
        {},
    )
    rebuilt = ServedSnapshot(changed.path, previous=first)
    assert rebuilt._product_rows is not first._product_rows and rebuilt._product_rows == first._product_rows
    tenant, product = sample_products(shop, 1)[0]
    assert rebuilt.items_json(tenant, "llr", product, 5) == first.items_json(tenant, "llr", product, 5)


def test_a_catalogue_id_outside_the_patterns_is_refused_like_any_other(shop, tmp_path):
    # The catalogue is not held to the URL patterns; the server still is, and answers 400, not the list.
    root = tmp_path / "snapshots"
    snapshot.publish(root, snapshot.stage(root, "odd", tiny_tables(product="a.b c"), {}))
    odd = replace(shop, snapshots=replace(shop.snapshots, root=root))
    with TestClient(create_app(odd)) as client:
        response = client.get(f"/v1/nl/products/{quote('a.b c')}/recommendations")
        assert response.status_code == 400 and "product_id must be" in response.json()["detail"]
        assert client.get("/v1/nl/products/2/recommendations").json()["items"] == []


def test_the_evaluations_visit_lists_are_what_the_session_route_answers(shop, client):
    """``sql/visit_lists.sql`` (which the evaluation scores) over the published lists, against the real route."""
    served = client.get("/ready").json()
    with warehouse.connect(shop.warehouse, read_only=True) as connection:
        algorithm = connection.execute(
            "SELECT served_algorithm FROM builds WHERE build_id = $b", {"b": served["snapshot"]}
        ).fetchone()[0]
        listed = [
            p
            for (p,) in connection.execute(
                "SELECT DISTINCT product_id FROM itemitem WHERE tenant = 'nl' AND algorithm = $a ORDER BY 1",
                {"a": algorithm},
            ).fetchall()
        ]
        draw = random.Random(5)
        visits = [draw.sample(listed, draw.randint(2, 7)) for _ in range(25)]
        test_items = pa.table(
            {
                "tenant": ["nl"] * sum(map(len, visits)),
                "session_id": [f"s{n}" for n, visit in enumerate(visits) for _ in visit],
                "product_id": [p for visit in visits for p in visit],
                "position": [i for visit in visits for i in range(1, len(visit) + 1)],
            }
        )
        connection.register("visits", test_items)
        values = {"algorithm": algorithm, "top_n": shop.algorithms.top_n, "name": evaluation.VISIT}
        rows = sqlfiles.query(connection, "visit_lists", values, reading={"test_items": "visits"}).fetchall()
    lists: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for _, _, session, position, related, rank, _ in rows:
        lists.setdefault((session, position), []).append((rank, related))
    assert len(lists) == sum(len(visit) - 1 for visit in visits)  # every step with a next product has a list
    for (session, position), entries in lists.items():
        visit = visits[int(session[1:])][:position]
        answer = client.get(
            "/v1/nl/sessions/recommendations", params={"products": ",".join(visit), "limit": shop.algorithms.top_n}
        ).json()
        assert answer["algorithm"] == algorithm
        assert [item["product_id"] for item in answer["items"]] == [related for _, related in sorted(entries)]
