"""Benchmark: the recommendations, gateway and visit endpoints under load, against a hello-world handler of the same server.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_serve.py                 # 20 s per run, 2 workers, 8, 32 and 64 connections
    .venv/bin/python tests/bench/bench_serve.py --seconds 10 --workers 1 --connections 32

It builds a shop of 180,000 products and 1M events once (cached under
``bench-data/serve-1M``), starts the real ``etalage serve`` on loopback, and
drives it with ``wrk`` (installed with apt when missing). For each number of
connections, in one run:

1. ``/health``, which returns a constant through the same app, middleware and
   worker settings: the hello-world rate (requested through the same wrk Lua
   script as the next runs, so the load generator does the same work);
2. ``/v1/{tenant}/products/{id}/recommendations`` for random catalogue
   products with recommendations (a wrk Lua script picks one per request);
3. ``/v1/{tenant}/products/{id}/gateway?visitor=...`` for the same products
   and 5,000 visitors: assignment, the variant's list, and an exposure queued
   for the flush loop, which writes Parquet files meanwhile;
4. ``/v1/{tenant}/sessions/recommendations?products=...`` for visits of five
   of those products (each of one tenant): five lists blended by recency;

then, at 32 connections (or the first count given), the recommendations
again while the live snapshot is switched away and back mid-run (``etalage
rollback``), counting failed and non-2xx responses.

Runs 1 to 4 alternate ``--rounds`` times (default 3), so that a burst of
noise from other work on the machine hits all of them, and each ratio is the
median of the rounds' ratios. It prints requests/s and p50/p99 latency for
each run, and the ratios to the hello-world rate (targets: >= 0.8; p99 under
5 ms for recommendations and under 10 ms for the gateway and the visit at 8
connections; zero failures during the swap).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import running_server  # noqa: E402 - after the path is set


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        print("installing wrk (apt-get install -y wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk")


def prepare(folder: Path) -> Path:
    """The benchmark shop, built twice so that there are two snapshots to switch between."""
    from engine import config
    from engine.example import generator

    config_path = folder / "etalage.toml"
    if not config_path.exists():
        spec = generator.ShopSpec(products=180_000, brands=1_850, events=1_000_000, days=28, seed=1)
        generator.write_shop(generator.generate(spec), folder, ("parquet",))
        config_path.write_text(config.example_toml("parquet"))
    cfg = config.load(config_path)
    while len(list(cfg.snapshots.root.glob("2*"))) < 2:
        subprocess.run(
            [sys.executable, "-m", "engine", "build", "--force", "--config", str(config_path)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return config_path


def product_paths(config_path: Path, count: int = 5_000) -> tuple[list[str], list[str], list[str]]:
    """Recommendations, gateway and visit paths for ``count`` random products with an llr list (a visitor each).

    Each visit is the product and four more of its tenant's, drawn alike.
    """
    from engine import config
    from engine.publish import warehouse

    cfg = config.load(config_path)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        rows = connection.execute(
            "SELECT DISTINCT tenant, product_id FROM itemitem WHERE algorithm = 'llr' ORDER BY ALL"
        ).fetchall()
    chosen = random.Random(1).sample(rows, min(count, len(rows)))
    recommendations = [f"/v1/{tenant}/products/{product}/recommendations?limit=5" for tenant, product in chosen]
    gateway = [
        f"/v1/{tenant}/products/{product}/gateway?visitor=0:bench-{n}&limit=5"
        for n, (tenant, product) in enumerate(chosen)
    ]
    by_tenant: dict[str, list[str]] = {}
    for tenant, product in rows:
        by_tenant.setdefault(tenant, []).append(product)
    draw = random.Random(2)
    visits = [
        f"/v1/{tenant}/sessions/recommendations?products={','.join([*draw.sample(by_tenant[tenant], 4), product])}"
        "&limit=10"
        for tenant, product in chosen
    ]
    return recommendations, gateway, visits


LUA = """
paths = {%s}
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def drive(wrk: str, url: str, seconds: int, connections: int, script: Path | None = None) -> dict:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for label, key in (("50%", "p50"), ("99%", "p99")):
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        figures[key] = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    figures["failed"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    figures["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", default="8,32,64", help="comma-separated numbers of connections")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating hello-world, recommendations, gateway and visit runs"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.connections.split(",")]

    wrk = ensure_wrk()
    folder = ROOT / "bench-data" / "serve-1M"
    print("preparing the shop and two snapshots (cached in bench-data/serve-1M) ...", flush=True)
    config_path = prepare(folder)
    names = ("hello-world (/health)", "recommendations", "gateway", "visit (sessions)")
    with tempfile.TemporaryDirectory() as scratch:
        scripts = [Path(scratch) / f"{name}.lua" for name in ("health", "recommendations", "gateway", "visit")]
        recommendations, gateway, visits = product_paths(config_path)
        # The same Lua request() for the hello-world run, so that wrk spends the same on every run.
        runs = (["/health"] * len(recommendations), recommendations, gateway, visits)
        for script, paths in zip(scripts, runs, strict=True):
            script.write_text(LUA % ", ".join(f'"{p}"' for p in paths))
        with running_server(config_path, workers=args.workers) as (base, _):
            drive(wrk, base, 3, counts[0], scripts[0])  # warm-up
            rounds = {
                connections: [
                    [drive(wrk, base, args.seconds, connections, script) for script in scripts]
                    for _ in range(args.rounds)
                ]
                for connections in counts
            }

            def swap() -> None:
                live = (folder / "snapshots" / "current").resolve().name
                for target in ([], [live]):  # to the one before, then back
                    time.sleep(args.seconds / 3)
                    subprocess.run(
                        [sys.executable, "-m", "engine", "rollback", *target, "--config", str(config_path)],
                        check=True,
                        stderr=subprocess.DEVNULL,
                    )

            swapped = 32 if 32 in counts else counts[0]
            swapper = threading.Thread(target=swap)
            swapper.start()
            during_swap = drive(wrk, base, args.seconds, swapped, scripts[1])
            swapper.join()

    print(f"\n{args.workers} workers, wrk 1 thread, {args.seconds} s per run, loopback")
    print(
        f"{'connections, run':<40}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}{'requests':>10}{'ratio':>8}"
    )
    for connections, runs in rounds.items():
        for n, figures in enumerate(runs, 1):
            for name, run in zip(names, figures, strict=True):
                ratio = f"{run['rps'] / figures[0]['rps']:>7.2f}x" if name != names[0] else ""
                print(
                    f"{f'{connections}, {n}: {name}':<40}{run['rps']:>12,.0f}{run['p50']:>9.2f}{run['p99']:>9.2f}"
                    f"{run['failed']:>8}{run['requests']:>10,}{ratio}"
                )
    hello_rate = statistics.median(figures[0]["rps"] for figures in rounds[swapped])
    print(
        f"{f'{swapped}, recommendations during 2 switches':<40}{during_swap['rps']:>12,.0f}{during_swap['p50']:>9.2f}"
        f"{during_swap['p99']:>9.2f}{during_swap['failed']:>8}{during_swap['requests']:>10,}"
        f"{during_swap['rps'] / hello_rate:>7.2f}x"
    )
    print("\nmedians of the rounds: ratio to hello-world (p99 ms)")
    for connections, runs in rounds.items():
        medians = [
            f"{name} {statistics.median(f[i]['rps'] / f[0]['rps'] for f in runs):.2f}x "
            f"({statistics.median(f[i]['p99'] for f in runs):.2f} ms)"
            for i, name in enumerate(names[1:], 1)
        ]
        hello = statistics.median(f[0]["rps"] for f in runs)
        print(f"{connections:>3} connections: hello-world {hello:,.0f}/s; " + "; ".join(medians))


if __name__ == "__main__":
    main()
