"""Two jobs on the same cores: how much each slows down, by thread count and OpenMP wait policy.

The job is a short inversion of a shipped procedural photo on the bundled model (what ``stylenerf-edit invert
--aligned --steps N`` does), run as a fresh process with the library (not the CLI, which sets its own policy). For each setting it is timed alone and as two copies at once;
the figure is the wall time of the pair over the time of one alone (2.0 would be a fair share of the machine,
above that the jobs get in each other's way). Median of ``--repeats`` runs.

    python bench/shared_cores.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stylenerf_edit.synthetic.dataset import demo_photos

SETTINGS = [  # (label, threads, OMP_WAIT_POLICY or None for the runtime's default)
    ("2 threads, default wait policy", 2, None),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, "PASSIVE"),
    ("1 thread", 1, None),
]


JOB = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from stylenerf_edit.invert.pipeline import InvertOptions, invert_photos
from stylenerf_edit.invert.settings import InversionConfig
invert_photos([sys.argv[2]], sys.argv[3], options=InvertOptions(config=InversionConfig(steps=int(sys.argv[4])),
              aligned=True), progress=False)
"""


def job(threads: int, policy: str | None, steps: int, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-c", JOB, str(threads), str(demo_photos()[1]), str(out), str(steps)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(procs: list[subprocess.Popen]) -> float:
    start = time.perf_counter()
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"{p.args} failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, invert --steps {args.steps}, "
          f"median of {args.repeats}")
    print("| setting | alone (s) | two at once (s) | slowdown of the pair over one alone |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for label, threads, policy in SETTINGS:
            alone, pair = [], []
            for r in range(args.repeats):
                alone.append(timed([job(threads, policy, args.steps, Path(d) / f"a{r}")]))
                pair.append(timed([job(threads, policy, args.steps, Path(d) / f"p{r}{k}") for k in range(2)]))
            a, p = statistics.median(alone), statistics.median(pair)
            print(f"| {label} | {a:.1f} | {p:.1f} | {p / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
