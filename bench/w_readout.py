"""How linearly W encodes the procedural world's head parameters: held-out R² of a linear read-out from w.

For N + M fresh latents z (``--seed``), w = the mapping network's output (truncation 1, one row: every row of
an unmixed W+ code is the same) and the targets are the ten head parameters the world draws from z
(``head_params_from_z``: smile, age, glasses, ... in their documented ranges; glasses is a 0/1 flag). An
ordinary least-squares fit with an intercept (float64) on the first N latents predicts the last M; R² =
1 - SSE / SST on those M, SST around their own mean, so 0 means "no better than the held-out mean".
InterFaceGAN's linear edit directions assume exactly this linearity.

    python bench/w_readout.py [--network bundled:heads] [--fit 2000] [--held-out 1000] [--seeds 0 1 2]

Several ``--seeds`` print one row each and their median, to show the spread of a 1000-latent estimate.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from stylenerf_edit.generator import load_with_info
from stylenerf_edit.generator.network import Generator
from stylenerf_edit.synthetic.params import PARAM_RANGES, head_params_from_z


def readout_r2(G: Generator, fit: int, held_out: int, seed: int) -> list[float]:
    """Held-out R² per head parameter (in ``PARAM_RANGES`` order)."""
    z = torch.randn(fit + held_out, G.cfg.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.mapping(z.to(G.device))[:, 0].double().cpu()
    targets = head_params_from_z(z).as_tensor().double()
    x = torch.cat([w, torch.ones(len(w), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(x[:fit], targets[:fit]).solution
    truth = targets[fit:]
    sse = (x[fit:] @ coef - truth).square().sum(0)
    sst = (truth - truth.mean(0)).square().sum(0)
    return (1 - sse / sst).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--fit", type=int, default=2000, help="latents the read-out is fitted on")
    parser.add_argument("--held-out", type=int, default=1000, help="latents R² is measured on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G, info = load_with_info(args.network)
    if args.fit <= G.cfg.w_dim + 1 or args.held_out < 2:
        parser.error(f"--fit must exceed w's {G.cfg.w_dim} dimensions + 1 and --held-out must be at least 2")
    print(f"# {info.name} ({info.weights_sha256[:12]}): linear read-out of the head parameters from w, "
          f"{args.fit} latents fitted, {args.held_out} held out; held-out R²")
    names = list(PARAM_RANGES)
    print("| seed | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 1))
    rows = []
    for seed in args.seeds:
        rows.append(readout_r2(G, args.fit, args.held_out, seed))
        print(f"| {seed} | " + " | ".join(f"{v:.2f}" for v in rows[-1]) + " |", flush=True)
    if len(rows) > 1:
        print("| median | " + " | ".join(f"{statistics.median(col):.2f}" for col in zip(*rows)) + " |")


if __name__ == "__main__":
    main()
