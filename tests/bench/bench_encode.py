"""Encoding speed end to end, JPEG files on disk to vectors in memory: the plain path against the pipelined one.

Writes its own product shots (600 x 800 JPEGs of a garment on white, about
what a shop's camera gives) into a temporary folder, then on the CPU, and on
the GPU when PyTorch sees one, encodes them with EfficientNet-Lite0 by both
paths in turn, ``--rounds`` times each, alternating so that other work on
the machine slows both alike:

* ``plain``: encoding as it was before the pipelined path
  (``TorchEncoder.reference_vectors``: one thread decodes, pads and resizes
  each picture with PIL, then the network runs the batch in float32), in
  batches of 32, the config's default;
* ``pipelined``: ``encode_images``, the build's path (worker processes, the
  device's decoding and precision), with ``OMP_WAIT_POLICY=PASSIVE`` as the
  build's visual stage sets it.

On the CPU it also times the plain path with that wait policy, to show what
the policy alone is worth. Each measurement runs in a process of its own, so
that each path has the environment it has in a build; the model's loading
and a warm-up batch are not timed. On a GPU it also encodes a mix of formats
(PNG with transparency, progressive and CMYK JPEG, WebP, GIF beside baseline
JPEGs) by the pipelined path, and times the network alone on ready tensors.
Every figure comes with the worst cosine between its vectors and the plain
path's. One JSON line on stdout, progress on stderr.

    .venv/bin/python tests/bench/bench_encode.py            # here: the CPU (about 3 minutes on 2 cores)
    python3 tests/bench/bench_encode.py --gpu-images 20000  # on a GPU machine: see docs/benchmarks.md for the wheels
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing it

from engine.example import pictures
from models.efficientnet import EfficientNetLite0

SIZE = (600, 800)
COLOURS = list(pictures.COLOUR_RGB.values())
CATEGORIES = ["dress", "trousers", "sneakers", "bag", "coat", "hat", "skirt", "t-shirt", "boots", "scarf"]
PLAIN_BATCH = 32


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
    """One picture in two in a format or JPEG flavour that nvJPEG does not take: the CPU decodes those."""
    path, seed = job
    image = shot(seed)
    kind = seed % 10
    if kind == 1:  # a cut-out with a transparent background
        image.putalpha(Image.fromarray(((np.asarray(image.convert("L")) < 250) * 255).astype(np.uint8)))
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
    return round(float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()), 5)


# --- one measurement, in a process of its own --------------------------------------------------------------------


def measure(path: str, device: str, files: list[Path], batch: int, vectors: Path | None) -> dict:
    """Images/s of one path over ``files`` after a warm-up batch (model loading, kernels and caches not timed)."""
    if path.startswith("plain"):
        encoder = EfficientNetLite0(device=device, precision="float32")
        encoder.reference_vectors(files[:batch], batch_size=batch)
        run = lambda: encoder.reference_vectors(files, batch_size=batch)  # noqa: E731
    else:
        encoder = EfficientNetLite0(device=device)
        encoder.encode_images(files[: 2 * batch], batch_size=batch)
        run = lambda: encoder.encode_images(files, batch_size=batch)  # noqa: E731
    if device == "cuda":
        torch.cuda.synchronize()
    begin = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - begin
    if vectors is not None:
        np.save(vectors, out)
    return {"images_s": round(len(files) / seconds, 1), "precision": encoder.precision}


def run_measure(path: str, device: str, folder: Path, count: int, batch: int, vectors: Path | None = None) -> dict:
    env = dict(os.environ)
    if path == "plain":
        env.pop("OMP_WAIT_POLICY", None)  # as before: libgomp's default, its threads spin a while when they wait
    else:
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # as engine/pipeline/visual_stage.py sets it for a build
    command = [sys.executable, __file__, "--measure", path, "--device", device, "--folder", str(folder)]
    command += ["--count", str(count), "--batch", str(batch)] + (["--vectors", str(vectors)] if vectors else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{path} on {device} failed:\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the comparison ----------------------------------------------------------------------------------------------


def compare(device: str, folder: Path, counts: dict[str, int], batch: int, rounds: int, scratch: Path) -> dict:
    """Alternate the paths on ``device``; images/s of each round, medians, the ratio, and the worst cosine."""
    result: dict = {"batch_size": {"plain": PLAIN_BATCH, "pipelined": batch}, "images": counts}
    for path in counts:
        result[path] = []
    for round_ in range(rounds):
        last = round_ == rounds - 1
        for path, count in counts.items():
            vectors = scratch / f"{device}-{path}.npy" if last else None
            measured = run_measure(
                path, device, folder, count, PLAIN_BATCH if path.startswith("plain") else batch, vectors
            )
            result[path].append(measured["images_s"])
            if path == "pipelined":
                result["precision"] = measured["precision"]
        print(f"{device} round {round_ + 1}: " + ", ".join(f"{p} {result[p][-1]}" for p in counts), file=sys.stderr)
    for path in counts:
        result[f"{path}_median"] = float(np.median(result[path]))
    result["ratio"] = round(result["pipelined_median"] / result["plain_median"], 2)
    plain = np.load(scratch / f"{device}-plain.npy")
    result["cosine_min"] = worst_cosine(np.load(scratch / f"{device}-pipelined.npy")[: len(plain)], plain)
    return result


def mixed_formats(folder: Path, count: int, batch: int, scratch: Path) -> dict:
    write_all(folder, count, write_mixed)
    measured = run_measure("pipelined", "cuda", folder, count, batch, scratch / "mixed.npy")
    files = sorted(folder.iterdir())[:: max(1, count // 500)]
    reference = EfficientNetLite0(device="cuda", precision="float32").reference_vectors(files)
    vectors = np.load(scratch / "mixed.npy")[:: max(1, count // 500)]
    return {"images": count, "images_s": measured["images_s"], "cosine_min": worst_cosine(vectors, reference)}


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
    return {
        "batch": batch,
        "precision": encoder.precision,
        "images_s": round(10 * batch / (time.perf_counter() - begin), 1),
    }


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-images", type=int, default=max(320, 64 * cores), help="pictures per CPU round")
    parser.add_argument("--gpu-images", type=int, default=20_000, help="pictures per pipelined GPU round")
    parser.add_argument("--gpu-plain-images", type=int, default=1_000, help="pictures per plain GPU round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement, run by this script in a new process
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        files = sorted(args.folder.iterdir())[: args.count]
        print(json.dumps(measure(args.measure, args.device, files, args.batch, args.vectors)))
        return

    gpu = torch.cuda.is_available()
    report: dict = {
        "bench": "encode",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "cores": cores,
            "cpu": cpu_model(),
            "load_average_before": os.getloadavg(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if gpu else None,
        },
        "pictures": f"{SIZE[0]}x{SIZE[1]} JPEG, quality 90",
    }
    try:
        import torchvision

        report["host"]["torchvision"] = torchvision.__version__
    except (ImportError, RuntimeError):
        report["host"]["torchvision"] = None
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as scratch:
        folder = Path(scratch, "jpeg")
        count = max(args.cpu_images, args.gpu_images if gpu else 0)
        files = write_all(folder, count, write_jpeg)
        report["jpeg_kib"] = round(sum(path.stat().st_size for path in files[:200]) / min(200, count) / 1024, 1)
        print(f"wrote {count:,} JPEGs in {time.perf_counter() - begin:.0f} s", file=sys.stderr)
        if not args.no_cpu:
            counts = {"plain": args.cpu_images, "pipelined": args.cpu_images, "plain_passive": args.cpu_images}
            report["cpu"] = compare("cpu", folder, counts, 32, args.rounds, Path(scratch))
        if gpu:
            counts = {"plain": args.gpu_plain_images, "pipelined": args.gpu_images}
            report["cuda"] = compare("cuda", folder, counts, 256, args.rounds, Path(scratch))
            report["cuda_mixed_formats"] = mixed_formats(Path(scratch, "mixed"), 5_000, 256, Path(scratch))
            report["cuda_network_alone"] = network_alone()
        else:
            report["cuda"] = "no GPU: PyTorch sees none on this machine"
    report["host"]["load_average_after"] = os.getloadavg()
    report["seconds"] = round(time.perf_counter() - begin)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
