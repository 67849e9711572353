"""Benchmark: the recommendations endpoint under load, against a hello-world handler of the same server.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_serve.py                 # 20 s per run, 2 workers
    .venv/bin/python tests/bench/bench_serve.py --seconds 10 --workers 1

It builds a shop of 180,000 products and 1M events once (cached under
``bench-data/serve-1M``), starts the real ``etalage serve`` on loopback, and
drives it with ``wrk`` (installed with apt when missing), in one run:

1. ``/health``, which returns a constant through the same app, middleware and
   worker settings: the hello-world rate (requested through the same wrk Lua
   script as the next run, so the load generator does the same work);
2. ``/v1/{tenant}/products/{id}/recommendations`` for random catalogue
   products with recommendations (a wrk Lua script picks one per request);
3. the same while the live snapshot is switched away and back mid-run
   (``etalage rollback``), counting failed and non-2xx responses.

Runs 1 and 2 alternate ``--rounds`` times (default 3), so that a burst of
noise from other work on the machine hits both, and the ratio is the median
of the rounds' ratios. It prints requests/s and p50/p99 latency for each
run, and the ratio of the recommendations rate to the hello-world rate
(target: >= 0.8, p99 < 5 ms, zero failures during the swap).
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
    while len([p for p in cfg.snapshots.root.glob("2*")]) < 2:
        subprocess.run(
            [sys.executable, "-m", "engine", "build", "--force", "--config", str(config_path)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
    return config_path


def product_paths(config_path: Path, count: int = 5_000) -> list[str]:
    from engine import config
    from engine.publish import warehouse

    cfg = config.load(config_path)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        rows = connection.execute(
            "SELECT DISTINCT tenant, product_id FROM itemitem WHERE algorithm = 'llr' ORDER BY ALL"
        ).fetchall()
    chosen = random.Random(1).sample(rows, min(count, len(rows)))
    return [f"/v1/{tenant}/products/{product}/recommendations?limit=5" for tenant, product in chosen]


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
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating hello-world and recommendations runs")
    args = parser.parse_args()

    wrk = ensure_wrk()
    folder = ROOT / "bench-data" / "serve-1M"
    print("preparing the shop and two snapshots (cached in bench-data/serve-1M) ...", flush=True)
    config_path = prepare(folder)
    with tempfile.TemporaryDirectory() as scratch:
        script, health = Path(scratch) / "paths.lua", Path(scratch) / "health.lua"
        paths = product_paths(config_path)
        script.write_text(LUA % ", ".join(f'"{p}"' for p in paths))
        # The same Lua request() for the hello-world run, so that wrk spends the same on both.
        health.write_text(LUA % ", ".join('"/health"' for _ in paths))
        with running_server(config_path, workers=args.workers) as (base, _):
            drive(wrk, base, 3, args.connections, health)  # warm-up
            rounds = []
            for _ in range(args.rounds):
                rounds.append(
                    (
                        drive(wrk, base, args.seconds, args.connections, health),
                        drive(wrk, base, args.seconds, args.connections, script),
                    )
                )

            def swap() -> None:
                live = (folder / "snapshots" / "current").resolve().name
                for target in ([], [live]):  # to the one before, then back
                    time.sleep(args.seconds / 3)
                    subprocess.run(
                        [sys.executable, "-m", "engine", "rollback", *target, "--config", str(config_path)],
                        check=True,
                        stderr=subprocess.DEVNULL,
                    )

            swapper = threading.Thread(target=swap)
            swapper.start()
            during_swap = drive(wrk, base, args.seconds, args.connections, script)
            swapper.join()

    print(f"\n{args.workers} workers, wrk 1 thread, {args.connections} connections, {args.seconds} s per run, loopback")
    print(f"{'run':<36}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}{'requests':>10}{'ratio':>8}")
    runs = [
        (f"{n}: {name}", figures, ratio)
        for n, (hello, recommendations) in enumerate(rounds, 1)
        for name, figures, ratio in (
            ("hello-world (/health)", hello, None),
            ("recommendations", recommendations, recommendations["rps"] / hello["rps"]),
        )
    ]
    hello_rate = statistics.median(hello["rps"] for hello, _ in rounds)
    runs.append(("recommendations, snapshot swaps", during_swap, during_swap["rps"] / hello_rate))
    for name, figures, ratio in runs:
        print(
            f"{name:<36}{figures['rps']:>12,.0f}{figures['p50']:>9.2f}{figures['p99']:>9.2f}"
            f"{figures['failed']:>8}{figures['requests']:>10,}" + (f"{ratio:>7.2f}x" if ratio else "")
        )
    ratios = [recommendations["rps"] / hello["rps"] for hello, recommendations in rounds]
    print(
        f"recommendations / hello-world, median of {len(rounds)} rounds: {statistics.median(ratios):.2f}x; "
        f"recommendations p99 median {statistics.median(r['p99'] for _, r in rounds):.2f} ms "
        f"(during swaps {during_swap['rps'] / hello_rate:.2f}x of the median hello-world rate)"
    )


if __name__ == "__main__":
    main()
