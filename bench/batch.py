"""Batch throughput: photos per hour of ``stylenerf-edit batch`` on the bundled model, per batch size and engine.

``--photos`` procedural photos (aligned 256 px crops from ``stylenerf-edit synth``, so no face detection: the
inversion and the file writing are what is measured) go through ``run_batch`` into a fresh output folder per
run. Photos per hour are taken over the processing wall time (first mini-batch handed out to last output
folder committed: model loading in the workers included, planning excluded). Each configuration is run
``--repeats`` times after one untimed warm-up per engine; the median is reported with the machine.

The local engine runs in this process (``--workers 1``) or in spawned processes; the Ray engine starts a local
instance with all CPUs and keeps it for every Ray run (its workers keep the model between tasks).

    python bench/batch.py [--photos 8] [--steps 20] [--batch-sizes 1 4 8] [--engines local ray] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stylenerf_edit.batch import BatchOptions, run_batch
from stylenerf_edit.invert.optimize import InversionConfig
from stylenerf_edit.invert.pipeline import InvertOptions
from stylenerf_edit.synthetic.dataset import synthesize


def photos_per_hour(photos: Path, network: str, engine: str, batch_size: int, steps: int, workers: int | None,
                    device: str) -> float:
    options = BatchOptions(invert=InvertOptions(config=InversionConfig(steps=steps), aligned=True,
                                                batch_size=batch_size),
                           engine=engine, workers=workers, device=device, progress=False)
    with tempfile.TemporaryDirectory() as out:
        report = run_batch(photos, out, network, options)
    if not report.ok or len(report.done) != len(report.planned):
        raise RuntimeError(f"bench run failed: {report.failed}")
    return report.photos_per_hour


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    load = ", load average {:.2f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads{load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="local processes / Ray tasks in flight")
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=5150, help="synth seed of the photos")
    args = parser.parse_args()
    ray = None
    if "ray" in args.engines:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as d:
            photos = Path(d)
            synthesize(args.photos, photos, resolution=256, seed=args.seed)
            print(f"{args.photos} procedural photos (synth seed {args.seed}), {args.steps} steps, {args.network}, "
                  f"device {args.device}, workers {args.workers or 'default'}, median of {args.repeats}; "
                  f"{machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
            print("| engine | " + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |")
            print("|---|" + "---|" * len(args.batch_sizes))
            for engine in args.engines:
                def rate(batch_size: int) -> float:
                    return photos_per_hour(photos, args.network, engine, batch_size, args.steps, args.workers,
                                           args.device)

                rate(args.batch_sizes[0])     # warm-up: caches, Ray's workers
                medians = [statistics.median(rate(b) for _ in range(args.repeats)) for b in args.batch_sizes]
                print(f"| {engine} | " + " | ".join(f"{m:.0f} photos/h" for m in medians) + " |", flush=True)
    finally:
        if ray is not None:
            ray.shutdown()


if __name__ == "__main__":
    main()
