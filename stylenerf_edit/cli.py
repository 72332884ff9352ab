"""``stylenerf-edit`` command line: parse, call the library, report. No logic lives here."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click

from stylenerf_edit import __version__
from stylenerf_edit.errors import StyleNerfEditError
from stylenerf_edit.invert.settings import POSE_METHODS, PTI_PARTS, InversionConfig, TuningConfig


def _friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one line on stderr and exit status 1 (2 is click's usage error)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StyleNerfEditError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            click.echo(f"error:{where} {e.strerror or e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _parse_seeds(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    seeds: list[int] = []
    try:
        for part in value.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.strip().split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected seeds like 7, 0-3 or 1,5,9") from None
    if any(s < 0 or s >= 2 ** 32 for s in seeds):
        raise click.BadParameter("seeds must be in [0, 2^32)")
    return seeds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stylenerf-edit")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, envvar="STYLENERF_EDIT_THREADS",
              help="CPU threads for torch (default: one per core). On a machine shared with other jobs, 1 or 2 "
                   "keeps each job from slowing the others down; env STYLENERF_EDIT_THREADS.")
def main(threads: int | None) -> None:
    """Invert portraits into StyleNeRF, edit them, and render them from new viewpoints."""
    from stylenerf_edit.threads import configure_threads

    configure_threads(threads)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--key", type=click.Choice(["G_ema", "G"]), default="G_ema", show_default=True,
              help="Which network of an official pickle to convert.")
@_friendly_errors
def convert(checkpoint: Path, out_dir: Path, key: str) -> None:
    """Convert an official CHECKPOINT (.pkl, read without running its embedded code) to safetensors + JSON."""
    from stylenerf_edit.generator import load_with_info, save_pretrained

    G, info = load_with_info(checkpoint, key=key)
    save_pretrained(G, out_dir, source={"file": Path(info.path).name, "file_sha256": info.file_sha256, "key": key})
    click.echo(f"wrote {out_dir} ({info.config.img_resolution} px, {info.parameter_count:,} parameters, "
               f"weights sha256 {info.weights_sha256[:16]}…)")


@main.command()
@click.argument("name", type=click.Choice(["ffhq_256", "ffhq_512", "ffhq_1024"]))
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Hugging Face cache directory (default: the hub's own).")
@_friendly_errors
def download(name: str, cache_dir: Path | None) -> None:
    """Download an official FFHQ checkpoint from the Hugging Face hub (facebook/stylenerf-ffhq-config-basic)."""
    from stylenerf_edit.generator.download import download as fetch

    click.echo(str(fetch(name, cache_dir)))


@main.command()
@click.argument("network", type=str)
@click.option("--key", type=click.Choice(["G_ema", "G"]), default="G_ema", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@_friendly_errors
def info(network: str, key: str, as_json: bool) -> None:
    """Describe a generator: resolution, num_ws, parameter count, sha256, config."""
    from stylenerf_edit.generator import describe

    d = describe(network, key=key).to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k in ("name", "path", "format", "img_resolution", "num_ws", "parameter_count", "file_sha256", "weights_sha256"):
        click.echo(f"{k:16s} {d[k]:,}" if isinstance(d[k], int) else f"{k:16s} {d[k]}")
    click.echo("config           " + json.dumps(d["config"]))


@main.command()
@click.argument("latents", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--network", default="bundled:heads", show_default=True,
              help="Official .pkl, converted directory, or model name (bundled:heads, ffhq_256, …).")
@click.option("--seed", "seeds", default=None, callback=_parse_seeds, help="Seeds: 7, 0-3 or 1,5,9.")
@click.option("--trunc", "truncation_psi", type=float, default=0.7, show_default=True, help="Truncation psi (seeds).")
@click.option("--yaw", "yaws", default=None,
              help="Degrees, one view (15) or several (-30:30:7, -20,0,20); + turns the camera to the subject's "
                   "left.  [default: a latent's own yaw, 0 for seeds]")
@click.option("--pitch", type=float, default=None,
              help="Degrees; + raises the camera above the face.  [default: a latent's own pitch, 0 for seeds]")
@click.option("--sweep", is_flag=True, help="Render a yaw sweep: PNG strip, GIF and MP4.")
@click.option("--frames", type=click.IntRange(2, 600), default=24, show_default=True, help="Frames of a sweep.")
@click.option("--max-yaw", type=click.FloatRange(0, 89), default=30.0, show_default=True,
              help="Sweep from -max-yaw to +max-yaw degrees.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("out"),
              show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@_friendly_errors
def render(latents: tuple[Path, ...], network: str, seeds: list[int] | None, truncation_psi: float, yaws: str | None,
           pitch: float | None, sweep: bool, frames: int, max_yaw: float, out_dir: Path, device: str) -> None:
    """Render seeds (--seed) or inverted LATENTS (.npz, with their camera, background and tuning) from a
    generator: one view, several yaws, or a yaw sweep."""
    from stylenerf_edit.editing.views import latent_name, parse_views, render_latent_file, render_seed
    from stylenerf_edit.generator import load_generator, resolve_device
    from stylenerf_edit.names import safe_output_names

    if sweep and yaws is not None:
        raise click.UsageError("--sweep and --yaw are exclusive (a sweep sets the yaw)")
    if bool(latents) == bool(seeds):
        raise click.UsageError("give latent files (inv/x/latent.npz) or --seed, not both and not neither")
    yaw_list = parse_views(yaws) if yaws is not None else None
    if latents:
        names = safe_output_names([(str(p), [latent_name(p)]) for p in latents], fallback="latent")
        for path, name in zip(latents, names):
            result = render_latent_file(path, out_dir, network, yaw_list, pitch, sweep, frames, max_yaw, device, name)
            click.echo(" ".join(str(f) for f in result.files))
        return
    G = load_generator(network, device=resolve_device(device))
    camera = G.camera_prior.frontal()
    camera = camera.with_(pitch=camera.pitch if pitch is None else pitch)
    for seed in seeds:
        result = render_seed(G, seed, out_dir, truncation_psi, camera=camera, yaws=yaw_list, sweep=sweep,
                             sweep_frames=frames, max_yaw=max_yaw)
        click.echo(" ".join(str(f) for f in result.files))


@main.command()
@click.option("--n", "n", type=click.IntRange(1, 10_000_000), required=True, help="How many photos.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--res", "resolution", type=click.IntRange(8, 2048), default=256, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2 ** 31 - 1), default=0, show_default=True)
@click.option("--depth", is_flag=True, help="Also write camera-depth maps (NNNNNN_depth.npy).")
@click.option("--world", type=click.IntRange(1, 2), default=None,
              help="Version of the procedural world  [default: the bundled model's]")
@_friendly_errors
def synth(n: int, out_dir: Path, resolution: int, seed: int, depth: bool, world: int | None) -> None:
    """Write procedural head "photos" (NNNNNN.png) with their ground truth (NNNNNN.json)."""
    from stylenerf_edit.synthetic.dataset import synthesize
    from stylenerf_edit.synthetic.renderer import DEFAULT_WORLD

    synthesize(n, out_dir, resolution=resolution, seed=seed, depth=depth, world=world or DEFAULT_WORLD)
    click.echo(f"wrote {n} photos with ground truth to {out_dir}")


def _parse_camera(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        yaw, pitch = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected YAW,PITCH in degrees, e.g. 15,-5") from None
    return yaw, pitch


@main.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--network", default="bundled:heads", show_default=True,
              help="Official .pkl, converted directory, or model name (bundled:heads, ffhq_256, …).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("out"),
              show_default=True, help="One folder per photo is written here.")
@click.option("--steps", type=click.IntRange(1, 100_000), default=InversionConfig.steps, show_default=True)
@click.option("--aligned", is_flag=True, help="Photos are already aligned square crops (e.g. from `synth`): "
              "no face detection.")
@click.option("--face-index", type=click.IntRange(0), default=0, show_default=True,
              help="Which face when there are several, counting from the largest.")
@click.option("--landmarks", type=click.Choice(["dlib", "face-alignment"]), default="dlib", show_default=True,
              help="Face detector and 68-point landmarks (face-alignment downloads its networks once).")
@click.option("--pose", type=click.Choice(list(POSE_METHODS)), default="auto", show_default=True,
              help="Initial camera: from landmarks, the model's pose predictor, or a search over the pose prior.")
@click.option("--camera", callback=_parse_camera, default=None, metavar="YAW,PITCH",
              help="Start from this camera (degrees) instead of estimating it.")
@click.option("--fix-camera", is_flag=True, help="Do not refine the camera during the optimisation.")
@click.option("--w-lr", type=float, default=InversionConfig.w_lr, show_default=True)
@click.option("--camera-lr", type=float, default=InversionConfig.camera_lr, show_default=True,
              help="Degrees per step.")
@click.option("--lpips-weight", type=float, default=InversionConfig.lpips_weight, show_default=True)
@click.option("--mse-weight", type=float, default=InversionConfig.mse_weight, show_default=True)
@click.option("--w-avg-weight", type=float, default=InversionConfig.w_avg_weight, show_default=True,
              help="Pull the W+ rows towards w_avg.")
@click.option("--spread-weight", type=float, default=InversionConfig.spread_weight, show_default=True,
              help="Pull the W+ rows towards each other.")
@click.option("--frontal-frozen-nerf", is_flag=True,
              help="Baseline: this optimiser under the official inversion's constraints: frontal camera (or "
                   "--camera) kept, NeRF rows and background frozen.")
@click.option("--batch-size", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Photos optimised together.")
@click.option("--photos-per-pass", type=click.IntRange(1, 256), default=InversionConfig.photos_per_pass,
              show_default=True, help="Photos sent through the generator together: 1 keeps each result bit-identical "
              "whatever its batch mates; more is faster (most on a GPU), results then differ by float rounding.")
@click.option("--lpips-resolution", type=click.IntRange(32, 256), default=InversionConfig.lpips_resolution,
              show_default=True, help="LPIPS compares the images downsampled to at most this size: 128 makes a "
              "256-px step about a third faster.")
@click.option("--coarse-fraction", type=click.FloatRange(0, 1, max_open=True),
              default=InversionConfig.coarse_fraction, show_default=True,
              help="Coarse to fine: this fraction of the first steps stops the upsampler at 64 px and fits the photo "
                   "downsampled to it (none on a model of 64 px or less). 0.5: a 256-px photo in 4.5 min instead of "
                   "6.9 on 2 CPU cores, for about 0.2 dB.")
@click.option("--save-video", is_flag=True, help="Also write optimisation.mp4 (target | reconstruction).")
@click.option("--paste-back", is_flag=True, help="Also write pasted.png: the reconstruction in the original photo.")
@click.option("--paste-region", type=click.Choice(["face", "square"]), default="face", show_default=True,
              help="What --paste-back blends in: the face region from the landmarks, feathered, or the whole "
                   "aligned square.")
@click.option("--pti", is_flag=True, help="Then tune the generator around each latent (pivotal tuning): "
              "tuning.safetensors beside latent.npz, which edit applies.")
@click.option("--pti-steps", type=click.IntRange(1), default=TuningConfig.steps, show_default=True)
@click.option("--pti-lr", type=float, default=TuningConfig.lr, show_default=True)
@click.option("--pti-parts", type=click.Choice(PTI_PARTS), default=TuningConfig.parts, show_default=True,
              help="Which parameters the tuning changes.")
@click.option("--pti-mse-weight", type=float, default=TuningConfig.mse_weight, show_default=True,
              help="Weight of the pixel MSE against LPIPS at the photo's view.")
@click.option("--pti-locality-weight", type=float, default=TuningConfig.locality_weight, show_default=True,
              help="Keep the renders of random latents near the pivot (PTI's regulariser; 0: off).")
@click.option("--pti-multiview-weight", type=float, default=TuningConfig.multiview_weight, show_default=True,
              help="Keep the pivot's renders at other cameras (0: off, naive PTI).")
@click.option("--pti-edit-weight", type=float, default=TuningConfig.edit_weight, show_default=True,
              help="Edits of the latent change the tuned image as they change the untuned one (0: off).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@_friendly_errors
def invert(photos: tuple[Path, ...], network: str, out_dir: Path, steps: int, aligned: bool, face_index: int,
           landmarks: str, pose: str, camera: tuple[float, float] | None, fix_camera: bool, w_lr: float,
           camera_lr: float, lpips_weight: float, mse_weight: float, w_avg_weight: float, spread_weight: float,
           frontal_frozen_nerf: bool, batch_size: int, photos_per_pass: int, lpips_resolution: int,
           coarse_fraction: float, save_video: bool,
           paste_back: bool, paste_region: str, pti: bool, pti_steps: int, pti_lr: float, pti_parts: str,
           pti_mse_weight: float, pti_locality_weight: float, pti_multiview_weight: float, pti_edit_weight: float,
           device: str) -> None:
    """Invert PHOTOS into the generator: aligned.png, reconstruction.png, latent.npz, metrics.json per photo."""
    from stylenerf_edit.invert.pipeline import InvertOptions, invert_photos

    if frontal_frozen_nerf:
        config = replace(InversionConfig.frozen_nerf(steps), photos_per_pass=photos_per_pass,
                         lpips_resolution=lpips_resolution, coarse_fraction=coarse_fraction)
        camera = camera or (0.0, 0.0)
    else:
        try:
            config = InversionConfig(steps=steps, w_lr=w_lr, camera_lr=camera_lr, lpips_weight=lpips_weight,
                                     mse_weight=mse_weight, w_avg_weight=w_avg_weight, spread_weight=spread_weight,
                                     refine_camera=not fix_camera, photos_per_pass=photos_per_pass,
                                     lpips_resolution=lpips_resolution, coarse_fraction=coarse_fraction)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    try:
        tuning = TuningConfig(steps=pti_steps, lr=pti_lr, parts=pti_parts, mse_weight=pti_mse_weight,
                              locality_weight=pti_locality_weight, multiview_weight=pti_multiview_weight,
                              edit_weight=pti_edit_weight) if pti else None
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    options = InvertOptions(config=config, aligned=aligned, face_index=face_index, landmarks=landmarks, pose=pose,
                            camera=camera, batch_size=batch_size, save_video=save_video, paste_back=paste_back,
                            paste_region=paste_region,
                            pti=tuning)
    outcomes = invert_photos(photos, out_dir, network, options, device=device)   # prints a line per photo
    failed = sum(bool(o.error) for o in outcomes)
    if failed:
        rest = "nothing was written" if failed == len(outcomes) else f"the others were written to {out_dir}"
        click.echo(f"{failed} of {len(outcomes)} photos failed; {rest}", err=True)
        sys.exit(1)


@main.command("calibrate-pose")
@click.option("--network", default="bundled:heads", show_default=True)
@click.option("--n", "n", type=click.IntRange(3, 100_000), default=200, show_default=True,
              help="Generator samples to fit on.")
@click.option("--seed", type=click.IntRange(0, 2 ** 31 - 1), default=0, show_default=True)
@click.option("--landmarks", type=click.Choice(["dlib", "face-alignment"]), default="dlib", show_default=True)
@click.option("--device", default="auto", show_default=True)
@_friendly_errors
def calibrate_pose(network: str, n: int, seed: int, landmarks: str, device: str) -> None:
    """Fit the landmark pose estimator to a generator's camera convention and save it beside the model."""
    from stylenerf_edit.invert.pipeline import calibrate_network

    cal, path = calibrate_network(network, n=n, seed=seed, landmarks=landmarks, device=device)
    click.echo(f"wrote {path}: yaw = {cal.yaw_scale:.3f} * estimate {cal.yaw_offset:+.2f} (RMS {cal.residual_yaw:.2f}°), "
               f"pitch = {cal.pitch_scale:.3f} * estimate {cal.pitch_offset:+.2f} (RMS {cal.residual_pitch:.2f}°), "
               f"{cal.samples} of {n} samples")


@main.group()
def directions() -> None:
    """Learn semantic edit directions (InterFaceGAN-style linear SVMs in W) and list the available ones."""


@directions.command("train")
@click.option("--network", default="bundled:heads", show_default=True)
@click.option("--attribute", "attributes", multiple=True, required=True,
              help="Attribute to learn (repeatable), e.g. smile; must be one the labeler scores.")
@click.option("--labeler", default="predictor", show_default=True,
              help="predictor (bundled model), landmarks (real faces, dlib), file:SCORES.csv|.npy, or "
                   "clip:ATTR=positive prompt|negative prompt.")
@click.option("--samples", type=click.IntRange(20), default=4000, show_default=True, help="Latents to sample.")
@click.option("--samples-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where samples and labels are kept (default OUT/samples); a rerun resumes there.")
@click.option("--cameras", type=click.Choice(["frontal", "prior"]), default="frontal", show_default=True,
              help="Render the samples at the frontal camera or at cameras drawn from the pose prior.")
@click.option("--condition", "conditions", multiple=True,
              help="Project this attribute's direction out of every learnt one (repeatable), e.g. yaw.")
@click.option("--ratio", type=click.FloatRange(0.001, 0.5), default=0.2, show_default=True,
              help="Fraction of samples taken as positives and as negatives (highest and lowest scores).")
@click.option("--seed", type=click.IntRange(0, 2 ** 31 - 1), default=0, show_default=True)
@click.option("--truncation", "truncation_psi", type=float, default=1.0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Writes ATTRIBUTE.npz per attribute here.")
@click.option("--install", is_flag=True, help="Also copy the directions beside the model, where `edit` finds "
              "them by name.")
@click.option("--device", default="auto", show_default=True)
@_friendly_errors
def directions_train(network: str, attributes: tuple[str, ...], labeler: str, samples: int,
                     samples_dir: Path | None, cameras: str, conditions: tuple[str, ...], ratio: float, seed: int,
                     truncation_psi: float, out_dir: Path, install: bool, device: str) -> None:
    """Sample, label and fit one direction per --attribute."""
    import shutil

    from stylenerf_edit.directions.library import directions_dir
    from stylenerf_edit.directions.train import direction_summary, train_directions

    trained = train_directions(network, attributes, out_dir, labeler=labeler, samples=samples,
                               samples_dir=samples_dir, cameras=cameras, seed=seed, truncation_psi=truncation_psi,
                               ratio=ratio, conditions=conditions, device=device)
    for t in trained:
        click.echo(f"{t.path}  {direction_summary(t.direction)}")
        if install:
            target = directions_dir(network)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(t.path, target / t.path.name)
            click.echo(f"installed as {target / t.path.name}")


@directions.command("list")
@click.option("--network", default="bundled:heads", show_default=True)
@click.option("--directions", "extra", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Also look in this folder (repeatable).")
@_friendly_errors
def directions_list(network: str, extra: tuple[Path, ...]) -> None:
    """The named directions `edit --edit NAME=STRENGTH` can use with a network."""
    from stylenerf_edit.directions.library import available_directions
    from stylenerf_edit.directions.direction import load_direction
    from stylenerf_edit.directions.train import direction_summary
    from stylenerf_edit.generator import describe

    info = describe(network)
    found = available_directions(network, extra)
    if not found:
        click.echo(f"no directions for {network}; train some with `stylenerf-edit directions train`")
    for name, path in found.items():
        click.echo(f"{path}  {direction_summary(load_direction(path, generator=info))}")


@main.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--labeler", "spec", default="age,gender,smile", show_default=True,
              help="Comma-separated labelers: age, gender, smile (real faces, networks from registry packages), "
                   "landmarks (dlib mouth geometry and head pose), predictor (bundled model's world), or one "
                   "clip:... spec.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {photo, attribute: score, ...}.")
@_friendly_errors
def label(photos: tuple[Path, ...], spec: str, as_json: bool) -> None:
    """Score the largest face of each photo, to check a labeler before learning directions from it."""
    from stylenerf_edit.directions.face_labelers import label_photos, labels_table
    from stylenerf_edit.directions.labelers import make_labelers

    results = label_photos(photos, make_labelers(spec))
    click.echo(json.dumps([r.to_dict() for r in results], indent=1) if as_json else labels_table(results))
    failed = [r for r in results if r.error]
    for r in failed:
        click.echo(f"error: {r.error}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("latent", type=click.Path(path_type=Path))
@click.option("--edit", "edits", multiple=True, metavar="NAME=STRENGTH",
              help="Direction (a name from `directions list` or a .npz) and strength in standard deviations of "
                   "the population along it, e.g. smile=2 (repeatable; edits add up). None: the latent as "
                   "inverted, from the views asked for.")
@click.option("--network", default="bundled:heads", show_default=True,
              help="The generator the latent was inverted with.")
@click.option("--rows", default=None, help="Apply only on these W+ rows: all, nerf, geometry, appearance, "
              "upsampler, or a list like 0-3,7 (default: each direction's own rows).")
@click.option("--directions", "extra", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Also look up direction names in this folder (repeatable).")
@click.option("--views", default="-30:30:5", show_default=True,
              help="Yaws of the before/after sheet: START:STOP:COUNT or a list, degrees.")
@click.option("--pitches", default=None, help="Also write grid.png over these pitches (same syntax).")
@click.option("--sweep", is_flag=True, help="Also write sweep.gif and sweep.mp4 of the edited face.")
@click.option("--clamp", is_flag=True, help="Shorten edits that would take the latent outside the range of the "
              "model's own samples (99 %) along their direction; without it such edits only get a warning.")
@click.option("--camera", callback=_parse_camera, default=None, metavar="YAW,PITCH",
              help="View the edit from this camera (degrees) instead of the latent's own; the edited latent keeps it.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("edited"),
              show_default=True)
@click.option("--device", default="auto", show_default=True)
@_friendly_errors
def edit(latent: Path, edits: tuple[str, ...], network: str, rows: str | None, extra: tuple[Path, ...], views: str,
         pitches: str | None, sweep: bool, clamp: bool, camera: tuple[float, float] | None, out_dir: Path,
         device: str) -> None:
    """Edit an inverted LATENT (.npz) and render it: latent.npz, edited.png, before_after.png (+ grid, sweep)."""
    from stylenerf_edit.editing.outputs import edit_latent_file
    from stylenerf_edit.editing.views import parse_views

    result = edit_latent_file(latent, edits, out_dir, network=network, rows=rows, directions=extra,
                              yaws=parse_views(views), pitches=parse_views(pitches) if pitches else None,
                              sweep=sweep, clamp=clamp, camera=camera, device=device)
    for check in result.checks:
        if not check.inside:
            click.echo(f"warning: {check.describe()}; it may leave what the model learnt (use a smaller strength "
                       "or --clamp)", err=True)
    if clamp and result.clamped:
        click.echo("clamped to the model's range: " + ", ".join(e.describe() for e in result.clamped), err=True)
    click.echo(f"{', '.join(result.latent.extra.get('edits', [])) or 'unedited'}: "
               + " ".join(str(f) for f in result.files))


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("demo"),
              show_default=True)
@click.option("--photo", type=click.Path(path_type=Path), default=None,
              help="Your own photo instead of the shipped procedural one (detected and aligned).")
@click.option("--network", default="bundled:heads", show_default=True)
@click.option("--steps", type=click.IntRange(1, 100_000), default=InversionConfig.steps, show_default=True)
@click.option("--pti", is_flag=True, help="Also tune the generator around the latent (pivotal tuning) and edit "
              "with the tuned generator.")
@click.option("--device", default="auto", show_default=True)
@_friendly_errors
def demo(out_dir: Path, photo: Path | None, network: str, steps: int, pti: bool, device: str) -> None:
    """The whole job in one command: invert a photo, edit smile, age and glasses, render new views, write index.html."""
    from stylenerf_edit.demo import run_demo

    result = run_demo(out_dir, photo=photo, network=network, steps=steps, pti=TuningConfig() if pti else None,
                      device=device)
    tuned = f", tuned {result.metrics['pti_psnr']:.2f} dB" if "pti_psnr" in result.metrics else ""
    click.echo(f"wrote {result.overview} and {result.index} (fit PSNR {result.metrics['psnr']:.2f} dB{tuned})")


@main.command()
@click.argument("input_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Output folder: one folder per photo, mirroring INPUT_DIR, and manifest.sqlite.")
@click.option("--edit", "edits", multiple=True, metavar="NAME=STRENGTH",
              help="Also write edits/NAME±STRENGTH/ per photo (repeatable; each edit applied on its own).")
@click.option("--views", default="-30:30:5", show_default=True,
              help="Yaws of each edit's before/after sheet: START:STOP:COUNT or a list, degrees.")
@click.option("--network", default="bundled:heads", show_default=True,
              help="Official .pkl, converted directory, or model name (bundled:heads, ffhq_256, …).")
@click.option("--steps", type=click.IntRange(1, 100_000), default=InversionConfig.steps, show_default=True)
@click.option("--aligned", is_flag=True, help="Photos are already aligned square crops: no face detection.")
@click.option("--batch-size", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Photos optimised together.")
@click.option("--photos-per-pass", type=click.IntRange(1, 256), default=InversionConfig.photos_per_pass,
              show_default=True, help="Photos sent through the generator together: 1 keeps each result bit-identical "
              "whatever its batch mates; more is faster (most on a GPU), results then differ by float rounding.")
@click.option("--lpips-resolution", type=click.IntRange(32, 256), default=InversionConfig.lpips_resolution,
              show_default=True, help="LPIPS compares the images downsampled to at most this size: 128 makes a "
              "256-px step about a third faster.")
@click.option("--coarse-fraction", type=click.FloatRange(0, 1, max_open=True),
              default=InversionConfig.coarse_fraction, show_default=True,
              help="Coarse to fine: this fraction of the first steps stops the upsampler at 64 px and fits the photo "
                   "downsampled to it (none on a model of 64 px or less). 0.5: a 256-px photo in 4.5 min instead of "
                   "6.9 on 2 CPU cores, for about 0.2 dB.")
@click.option("--pti", is_flag=True, help="Also tune the generator around each latent (pivotal tuning, default "
              "settings; see invert --pti): tuning.safetensors per photo, used by its edits.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Local: worker processes, one device each [1: this process]. Ray: tasks in flight "
                   "[the cluster's GPUs, else CPUs].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (--engine ray); default: a local instance.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Process at most N photos this run.")
@click.option("--dry-run", is_flag=True, help="List what would be processed; change nothing.")
@click.option("--retry-failed", is_flag=True, help="Retry photos that failed before with the same settings.")
@click.option("--force", is_flag=True, help="Redo photos that were done with other settings.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:1, or a list cuda:0,cuda:1 for local workers.")
@_friendly_errors
def batch(input_dir: Path, out_dir: Path, edits: tuple[str, ...], views: str, network: str, steps: int,
          aligned: bool, batch_size: int, photos_per_pass: int, lpips_resolution: int, coarse_fraction: float,
          pti: bool, workers: int | None,
          engine: str,
          address: str | None, limit: int | None,
          dry_run: bool, retry_failed: bool, force: bool, device: str) -> None:
    """Invert (and edit) every photo under INPUT_DIR; resumable: a rerun skips finished photos."""
    from stylenerf_edit.batch import BatchOptions, format_plan, format_summary, run_batch
    from stylenerf_edit.invert.pipeline import InvertOptions

    config = InversionConfig(steps=steps, photos_per_pass=photos_per_pass, lpips_resolution=lpips_resolution,
                             coarse_fraction=coarse_fraction)
    options = BatchOptions(invert=InvertOptions(config=config, aligned=aligned,
                                                batch_size=batch_size, pti=TuningConfig() if pti else None),
                           edits=edits, views=views, engine=engine, workers=workers, address=address,
                           device=device, limit=limit, dry_run=dry_run, retry_failed=retry_failed, force=force)
    report = run_batch(input_dir, out_dir, network, options)
    click.echo(format_plan(report) if dry_run else format_summary(report))
    if not dry_run and not report.ok:
        sys.exit(1)


@main.command()
@click.option("--network", default="bundled:heads", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback lets other machines in (a warning is printed).")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="0: any free port.")
@click.option("--latents", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="A folder of latents (e.g. invert's --out) the page may open; nothing else on disk is reachable.")
@click.option("--directions", "extra", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Also offer the directions in this folder (repeatable).")
@click.option("--device", default="auto", show_default=True)
@_friendly_errors
def serve(network: str, host: str, port: int, latents: Path | None, extra: tuple[Path, ...], device: str) -> None:
    """The editor in a browser: upload a photo, watch it invert, drag the edits and the camera, download."""
    try:
        from stylenerf_edit.web.server import serve as run_server
    except ImportError as e:
        raise StyleNerfEditError(f"the web editor needs the 'web' extra ({e.name} is missing): "
                                 "pip install 'stylenerf-edit[web]'") from None

    run_server(network, host=host, port=port, latents=latents, directions=extra, device=device,
               announce=lambda line: click.echo(line, err=line.startswith("warning")))


if __name__ == "__main__":
    main()
