"""How live the web editor feels: frames per second while a slider is dragged, in headless Chromium.

Starts ``stylenerf-edit serve`` (a fresh process, ``--threads N``) with one latent of the model in ``--latents``,
opens it in the page, then drags: ``--moves`` slider positions, each sent as the browser's ``input`` event
``--interval`` ms after the last (a quick drag), then releases it. The page keeps one render in flight, asks for
previews (half resolution, coarse samples) while the slider moves and for the full image on release, and sends
only the latest position, so the figure is the frames the visitor actually sees per second of dragging, with the
latency of each. It also times the render alone (edit applied, rendered) in this process. Median of ``--repeats``
drags.

    python bench/web_editor.py [--network bundled:heads] [--threads 2] [--moves 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from stylenerf_edit.editing.views import latent_from_seed
from stylenerf_edit.invert.latent import GeneratorRef, Latent, save_latent
from stylenerf_edit.web.editor import EditorModel, View, Workspace

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def drag(page, moves: int, interval: float) -> tuple[float, float, float]:
    """Drag the yaw slider through ``moves`` positions, then release it; (frames per second while dragging and
    until the full image is shown, median ms per preview, ms of the full image on release)."""
    page.evaluate("() => { window.editorStats.frames = 0; window.editorStats.ms = []; }")
    t0 = time.perf_counter()
    for i in range(moves):
        page.evaluate(f"() => {{ const s = document.getElementById('yaw'); s.value = {-30 + 60 * i / (moves - 1)}; "
                      "s.dispatchEvent(new Event('input')); }")
        time.sleep(interval / 1000)
    page.wait_for_function("document.getElementById('view').dataset.pending === '0'", timeout=120_000)
    page.evaluate("() => document.getElementById('yaw').dispatchEvent(new Event('change'))")   # released
    page.wait_for_function("document.getElementById('view').dataset.preview === '0' && "
                           "document.getElementById('view').dataset.pending === '0'", timeout=120_000)
    seconds = time.perf_counter() - t0
    stats = page.evaluate("() => window.editorStats")
    return stats["frames"] / seconds, statistics.median(stats["ms"][:-1]), stats["ms"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="bundled:heads")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--interval", type=float, default=16.0, help="ms between slider positions")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    torch.set_num_threads(args.threads)
    model = EditorModel(args.network)
    with tempfile.TemporaryDirectory() as tmp:
        ws, bg = latent_from_seed(model.G, 3)
        save_latent(Latent(ws=ws[0].numpy(), camera=model.G.camera_prior.frontal(), bg_code=bg[0].numpy(),
                           generator=GeneratorRef.from_info(model.info)), Path(tmp) / "latents" / "seed3.npz")
        workspace = Workspace(model, Path(tmp) / "alone")
        workspace.open_latent(Path(tmp) / "latents" / "seed3.npz")
        alone: dict[bool, list[float]] = {False: [], True: []}
        for preview in (False, True):
            for i in range(20):
                t0 = time.perf_counter()
                workspace.render(View({"smile": 1.0}, yaw=-30 + 3 * i), preview=preview)
                alone[preview].append(time.perf_counter() - t0)
        server = subprocess.Popen([sys.executable, "-m", "stylenerf_edit.cli", "--threads", str(args.threads), "serve",
                                   "--network", args.network, "--port", "0", "--latents", str(Path(tmp) / "latents")],
                                  stdout=subprocess.PIPE, text=True)
        url = server.stdout.readline().split()[4]
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(bypass_csp=True)
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']")
                page.click("#open-listed")
                page.wait_for_function("Number(document.getElementById('view').dataset.renders) > 0")
                runs = [drag(page, args.moves, args.interval) for _ in range(args.repeats)]
                browser.close()
        finally:
            server.terminate()
            server.wait()
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} torch thread(s); "
          f"{args.network} ({model.G.img_resolution} px)")
    print(f"render alone (edit + render, median of 20): full {statistics.median(alone[False]) * 1000:.0f} ms, "
          f"preview {statistics.median(alone[True]) * 1000:.0f} ms")
    print(f"dragging in the page ({args.moves} positions {args.interval:g} ms apart, median of {args.repeats}): "
          f"{statistics.median(r[0] for r in runs):.1f} frames/s, {statistics.median(r[1] for r in runs):.0f} ms "
          f"per preview, full image {statistics.median(r[2] for r in runs):.0f} ms after release")


if __name__ == "__main__":
    main()
