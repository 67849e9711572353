"""The docs are the contract: every table, column, command, config key and SQL file is documented, and the site builds.

The README is the front door (what etalage is, the two commands, the commands and
exit codes); everything else is the MkDocs site in ``docs/``. The command-line
help and the example configuration in the docs are written by cog from the code
(``python -m cogapp -r docs/cli.md docs/configuration.md``), and checked here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from msgspec.structs import fields

from engine import build, cli, config, sqlfiles
from engine.pipeline import state
from engine.publish import warehouse

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()


def page(name: str) -> str:
    return (DOCS / name).read_text()


def sections(text: str, level: int = 2) -> dict[str, str]:
    """The text's sections of ``level`` (2: ``## ``) by heading, each up to the next heading of that level or above."""
    found, fence, heading, body = {}, False, None, []
    for line in text.split("\n"):
        if line.startswith("```"):
            fence = not fence
        match = None if fence else re.match(rf"^(#{{1,{level}}}) (.*)$", line)
        if match:
            if heading is not None:
                found[heading] = "\n".join(body).strip("\n")
            heading, body = (match.group(2), []) if len(match.group(1)) == level else (None, [])
        elif heading is not None:
            body.append(line)
    if heading is not None:
        found[heading] = "\n".join(body).strip("\n")
    return found


def documented_tables() -> dict[str, list[tuple[str, str]]]:
    """``## `name` `` sections of docs/tables.md and the (column, type) rows of their first table."""
    tables = {}
    for heading, body in sections(page("tables.md")).items():
        if match := re.fullmatch(r"`(\w+)`", heading):
            tables[match.group(1)] = re.findall(r"^\| `(\w+)` \| ([A-Z]+(?:\[\])?) \|", body, flags=re.M)
    return tables


def test_every_table_in_the_warehouse_is_documented_with_its_columns(built_small_shop):
    with warehouse.connect(built_small_shop / "warehouse.duckdb", read_only=True) as connection:
        names = connection.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall()
        actual = {name: [(c[0], c[1]) for c in connection.execute(f"DESCRIBE {name}").fetchall()] for (name,) in names}
    documented = documented_tables()
    assert {table: documented[table] for table in actual} == actual
    # Every documented table is made by a build, except `tuning`, which `etalage tune` adds (tests/test_tune.py),
    # and `embeddings`, which lives in the visual stage's cache file (tests/test_visual_build.py checks its columns).
    later = {"tuning", "embeddings"}
    made = set(build.PUBLISHED_TABLES) | set(warehouse.HISTORY_TABLES) | set(state.TABLES) | set(state.TRAINING_TABLES)
    assert set(actual) == set(documented) - later == made - later


def test_every_command_is_in_the_readme_and_the_docs():
    for name in cli.main.commands:
        assert f"| `etalage {name}" in README, name
        assert f"| `etalage {name}" in page("cli.md"), name
        assert f"### `etalage {name}`" in page("cli.md"), name


def test_every_config_key_is_documented_and_every_documented_key_exists():
    keys = {
        "warehouse.path",
        "warehouse.memory_limit",
        "catalogue.path",
        "events.avro",
        "events.parquet",
        "events.mapping.<column>",
    }
    for table, kind in (
        ("algorithms", config.Algorithms),
        ("evaluation", config.Evaluation),
        ("visual", config.Visual),
        ("snapshots", config.Snapshots),
        ("serving", config.Serving),
        ("experiment", config.Experiment),
        ("experiment.variants[]", config.Variant),
    ):
        keys |= {f"{table}.{f.name}" for f in fields(kind)}
    text = page("configuration.md")
    keys_table = text.split("| column |", 1)[0]
    documented = set(re.findall(r"^\| `([\w.<>\[\]]+)` \| [^|]* \| ", keys_table, flags=re.M))
    assert documented == keys
    for column, expression in config.DIVOLTE_MAPPING.items():
        assert f"| `{column}` | `{expression.replace('|', '|')}` |" in text, column


def test_every_sql_file_is_documented():
    for name in sqlfiles.names():
        assert f"sql/{name}.sql" in page("how-it-works.md"), name


def test_exit_codes_are_documented():
    codes = [value for name, value in vars(cli).items() if name.startswith("EXIT_")]
    assert sorted(codes) == [3, 4, 5, 6, 7, 8]
    for code in [0, 1, 2, *codes]:
        assert f"\n| {code} |" in README
        assert f"\n| {code} |" in page("cli.md")


def test_the_analysts_first_five_queries_run_on_the_example_warehouse():
    section = sections(page("tables.md"))["An analyst's first five queries"]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    queries = [q for q in block.split(";") if q.strip()]
    assert len(queries) == 5
    example = ROOT / "warehouse.duckdb.example"
    with warehouse.connect(example, read_only=True) as connection:
        for query in queries:
            assert connection.execute(query).fetchall(), query


def test_the_products_the_docs_name_are_the_example_shops_with_its_lists():
    """Every product a documented URL or answer names is in the example shop, and a documented list is its list."""
    text = "\n".join([README, *(path.read_text() for path in DOCS.glob("*.md"))])
    named = set(re.findall(r"/v1/(\w+)/products/(\d+)", text))
    answers = [
        (match.group(1), json.loads(match.group(2).replace("\n", "")))
        for match in re.finditer(r"^\$ curl '[^']*/v1/(\w+)/products/\d+/[^']*'\n(\{.*?\})\n```", text, re.M | re.S)
    ]
    assert named and answers
    with warehouse.connect(ROOT / "warehouse.duckdb.example", read_only=True) as connection:
        catalogue = set(connection.execute("SELECT tenant, product_id FROM products").fetchall())
        assert named <= catalogue
        for tenant, answer in answers:
            assert {(tenant, item["product_id"]) for item in answer["items"]} <= catalogue
            listed = connection.execute(
                "SELECT related_product_id, rank, distance_score FROM itemitem "
                "WHERE tenant = $tenant AND algorithm = $algorithm AND product_id = $product ORDER BY rank LIMIT $n",
                {
                    "tenant": tenant,
                    "algorithm": answer["algorithm"],
                    "product": answer["product_id"],
                    "n": len(answer["items"]),
                },
            ).fetchall()
            assert [(i["product_id"], i["rank"], i["score"]) for i in answer["items"]] == listed


def test_the_readme_is_a_short_front_door_whose_sections_are_the_docs_own():
    assert len(README.splitlines()) <= 200
    docs = {**sections(page("index.md")), **sections(page("cli.md"))}
    shared = {heading: body for heading, body in sections(README).items() if heading != "Documentation"}
    assert set(shared) == {"Two commands", "The example warehouse", "Commands"}
    for heading, body in shared.items():
        # The README links into docs/; the site's pages link to each other.
        assert body.replace("](docs/", "](") == docs[heading], heading
    assert README.split("\n## ", 1)[0].replace("](docs/", "](") in page("index.md")


def test_the_readmes_second_command_is_what_ci_runs():
    blocks = re.findall(r"```sh\n(.*?)\n```", sections(README)["Two commands"], flags=re.S)
    assert blocks[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -e '.[visual]' && .venv/bin/etalage demo",
        (
            "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/ruff check . && .venv/bin/ruff format --check . "
            "&& .venv/bin/mypy && .venv/bin/pytest"
        ),
    ]
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == blocks[1]


def documented_help() -> dict[str, str]:
    """docs/cli.md's help text of each command, by command name."""
    reference = page("cli.md").split("## Every command's `--help`", 1)[1]
    return dict(re.findall(r"^### `etalage ([\w-]+)`\n\n```text\n(.*?)\n```", reference, flags=re.M | re.S))


def test_the_cli_reference_is_every_commands_own_help():
    documented = documented_help()
    assert sorted(documented) == sorted(cli.main.commands)
    for name in cli.main.commands:
        result = CliRunner().invoke(cli.main, [name, "--help"], prog_name="etalage", terminal_width=78)
        assert result.exit_code == 0, result.output
        assert documented[name] == result.output.rstrip(), f"run: python -m cogapp -r docs/cli.md ({name} changed)"


def test_the_cli_reference_is_what_etalage_prints():
    result = subprocess.run(
        [sys.executable, "-m", "engine", "build", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert documented_help()["build"] == result.stdout.rstrip().replace("Usage: python -m engine", "Usage: etalage")


def test_the_example_configuration_in_the_docs_is_the_one_generate_writes():
    section = sections(page("configuration.md"))["The example configuration"]
    block = section.split("```toml\n", 1)[1].split("\n```", 1)[0]
    assert block == config.example_toml().rstrip(), "run: python -m cogapp -r docs/configuration.md"


def test_the_docs_site_builds_offline_with_every_link_and_anchor(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' (the test extra has it)")
    pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # Nothing on a page is fetched from elsewhere: no web fonts, scripts or style sheets from a CDN.
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert not re.search(r"<(?:script|link|img)[^>]*(?:src|href)=\"(?:https?:)?//", text), html
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, html
    # The README's links into docs/ name pages and headings that exist.
    for target, anchor in re.findall(r"\]\(docs/([\w.-]+)(?:#([\w-]+))?\)", README):
        assert (DOCS / target).exists(), target
        if anchor:
            built = site / ("index.html" if target == "index.md" else f"{target.removesuffix('.md')}/index.html")
            assert f'id="{anchor}"' in built.read_text(), f"docs/{target}#{anchor}"
