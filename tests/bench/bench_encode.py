"""Encoding speed end to end, JPEG files on disk to vectors in memory: the plain path against the pipelined one.

Writes its own product shots (600 x 800 JPEGs of a garment on white, about
what a shop's camera gives) into a temporary folder, then on the CPU, and on
the GPU when PyTorch sees one, encodes them with EfficientNet-Lite0 by the
two paths in turn, ``--rounds`` times each, alternating so that other work
on the machine slows both alike:

* ``plain``: the path encoding took before the pipelined one
  (``TorchEncoder.reference_vectors``: one thread decodes, pads and resizes
  each picture with PIL, then the network runs the batch in float32);
* ``pipelined``: ``encode_images``, the build's path (worker processes, the
  device's decoding and precision).

On a GPU it also encodes a mix of formats (PNG with transparency, progressive
and CMYK JPEG, WebP, GIF beside baseline JPEGs) by the pipelined path, and
times the network alone on ready tensors. Every figure comes with the
worst cosine between the path's vectors and the plain float32 ones. One JSON
line on stdout; progress on stderr. On a 16-core GPU machine the whole run
takes about five minutes, most of it the plain path.

    .venv/bin/python tests/bench/bench_encode.py            # the CPU only, where there is no GPU
    python3 tests/bench/bench_encode.py --gpu-images 20000  # on a GPU machine (see the README for the wheels)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing it

from engine.example import pictures  # noqa: E402
from models.efficientnet import EfficientNetLite0  # noqa: E402

SIZE = (600, 800)
COLOURS = list(pictures.COLOUR_RGB.values())
CATEGORIES = ["dress", "trousers", "sneakers", "bag", "coat", "hat", "skirt", "t-shirt", "boots", "scarf"]


def shot(seed: int) -> Image.Image:
    """A 600 x 800 product shot: a drawn garment in a catalogue colour, with fabric noise, on white."""
    rng = np.random.default_rng(seed)
    mask = pictures.draw(CATEGORIES[seed % len(CATEGORIES)], rng).resize((560, 560), Image.Resampling.BICUBIC)
    garment = np.asarray(pictures.tint(mask, COLOURS[seed % len(COLOURS)]), dtype=np.float32)
    covered = np.asarray(mask, dtype=np.float32)[..., None] > 8
    garment = np.where(covered, garment + rng.normal(0, 6, garment.shape), garment)
    canvas = Image.new("RGB", SIZE, (255, 255, 255))
    canvas.paste(Image.fromarray(np.clip(garment, 0, 255).astype(np.uint8)), (20, 120 + seed % 60))
    return canvas


def write_jpeg(job: tuple[Path, int]) -> Path:
    path, seed = job
    shot(seed).save(path, quality=90)
    return path


def write_mixed(job: tuple[Path, int]) -> Path:
    """Every fifth picture in a format or JPEG flavour that nvJPEG does not take: the CPU decodes those."""
    path, seed = job
    image = shot(seed)
    kind = seed % 10
    if kind == 1:  # a cut-out with a transparent background
        alpha = Image.fromarray(((np.asarray(image.convert("L")) < 250) * 255).astype(np.uint8))
        image.putalpha(alpha)
        path = path.with_suffix(".png")
        image.save(path)
    elif kind == 3:
        image.save(path, quality=90, progressive=True)
    elif kind == 5:
        image.convert("CMYK").save(path, quality=90)
    elif kind == 7:
        path = path.with_suffix(".webp")
        image.save(path, quality=90)
    elif kind == 9:
        path = path.with_suffix(".gif")
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    else:
        image.save(path, quality=90)
    return path


def write_all(folder: Path, count: int, writer) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with Pool(len(os.sched_getaffinity(0))) as pool:
        return pool.map(writer, [(folder / f"{i:06d}.jpg", i) for i in range(count)], chunksize=64)


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def timed(run) -> tuple[float, np.ndarray]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    begin = time.perf_counter()
    vectors = run()
    return time.perf_counter() - begin, vectors


def compare(device: str, files: list[Path], plain_files: list[Path], batch: int, rounds: int) -> dict:
    """Alternate the plain and the pipelined path on ``device``; images/s of each round, and their worst cosine.

    The plain path runs batches of 32, the config's default and before this
    path its best on a GPU too (95 images/s against 89 at 256).
    """
    plain = EfficientNetLite0(device=device, precision="float32")
    piped = EfficientNetLite0(device=device)
    plain.reference_vectors(plain_files[:32])  # warm-up: allocations, kernels, caches
    piped.encode_images(files[: 4 * batch], batch_size=batch)
    result: dict = {"precision": piped.precision, "batch_size": batch, "plain": [], "pipelined": []}
    for round_ in range(rounds):
        seconds, reference = timed(lambda: plain.reference_vectors(plain_files, batch_size=32))
        result["plain"].append(round(len(plain_files) / seconds, 1))
        seconds, vectors = timed(lambda: piped.encode_images(files, batch_size=batch))
        result["pipelined"].append(round(len(files) / seconds, 1))
        print(
            f"{device} round {round_ + 1}: plain {result['plain'][-1]}, pipelined {result['pipelined'][-1]} images/s",
            file=sys.stderr,
        )
    result["ratio"] = round(float(np.median(result["pipelined"]) / np.median(result["plain"])), 2)
    result["cosine_min"] = round(worst_cosine(vectors[: len(plain_files)], reference), 5)
    result["images"] = {"plain": len(plain_files), "pipelined": len(files)}
    return result


def mixed_formats(folder: Path, count: int, batch: int) -> dict:
    files = write_all(folder, count, write_mixed)
    piped = EfficientNetLite0(device="cuda")
    piped.encode_images(files[: 2 * batch], batch_size=batch)
    seconds, vectors = timed(lambda: piped.encode_images(files, batch_size=batch))
    sample = files[:: max(1, count // 500)]
    reference = EfficientNetLite0(device="cuda", precision="float32").reference_vectors(sample)
    return {
        "images": count,
        "images_s": round(count / seconds, 1),
        "cosine_min": round(worst_cosine(vectors[:: max(1, count // 500)], reference), 5),
    }


def network_alone(batch: int = 512) -> dict:
    encoder = EfficientNetLite0(device="cuda")
    tensor = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            encoder.forward(tensor)
        torch.cuda.synchronize()
        begin = time.perf_counter()
        for _ in range(10):
            encoder.forward(tensor)
        torch.cuda.synchronize()
    return {"batch": batch, "images_s": round(10 * batch / (time.perf_counter() - begin), 1)}


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--cpu-images", type=int, default=max(320, 64 * cores), help="pictures per CPU round")
    parser.add_argument("--gpu-images", type=int, default=20_000, help="pictures per pipelined GPU round")
    parser.add_argument("--gpu-plain-images", type=int, default=1_000, help="pictures per plain GPU round (95/s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    args = parser.parse_args()

    gpu = torch.cuda.is_available()
    report: dict = {
        "bench": "encode",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "cores": cores,
            "cpu": cpu_model(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if gpu else None,
        },
        "pictures": f"{SIZE[0]}x{SIZE[1]} JPEG, quality 90",
    }
    try:
        import torchvision

        report["host"]["torchvision"] = torchvision.__version__
    except (ImportError, RuntimeError):
        report["host"]["torchvision"] = None
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as scratch:
        begin = time.perf_counter()
        count = max(args.cpu_images, args.gpu_images if gpu else 0)
        files = write_all(Path(scratch, "jpeg"), count, write_jpeg)
        size = sum(path.stat().st_size for path in files[:200]) / min(200, count)
        print(f"wrote {count:,} JPEGs of {size / 1024:.0f} KiB in {time.perf_counter() - begin:.0f} s", file=sys.stderr)
        report["jpeg_kib"] = round(size / 1024, 1)
        if not args.no_cpu:
            cpu_files = files[: args.cpu_images]
            report["cpu"] = compare("cpu", cpu_files, cpu_files, 32, args.rounds)
        if gpu:
            gpu_files = files[: args.gpu_images]
            report["cuda"] = compare("cuda", gpu_files, files[: args.gpu_plain_images], 256, args.rounds)
            report["cuda_mixed_formats"] = mixed_formats(Path(scratch, "mixed"), 5_000, 256)
            report["cuda_network_alone"] = network_alone()
        else:
            report["cuda"] = "no GPU: PyTorch sees none on this machine"
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
