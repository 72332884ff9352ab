"""The StyleNeRF generator: mapping -> styled NeRF + background NeRF -> volume rendering -> 2-D upsampler.

Inputs are explicit: ws, cameras and the background code. Nothing draws random numbers unless handed
a ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import torch
from torch import nn

from .camera import Camera, CameraPrior, ray_bundle, stack_cameras
from .mapping import MappingNetwork
from .nerf import BackgroundNeRF, ForegroundNeRF
from .rendering import RenderedRays, VolumeRenderer
from .upsampler import SynthesisBlock

CameraLike = Union[Camera, Sequence[Camera], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GeneratorConfig:
    """Every size and switch of the generator. ``to_dict``/``from_dict`` give the JSON stored beside weights."""

    img_resolution: int
    z_dim: int = 512
    w_dim: int = 512
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    nerf_resolution: int = 32
    feature_dim: int = 256
    fg_hidden: int = 128
    fg_layers: int = 8
    fg_freqs: int = 10
    bg_hidden: int = 64
    bg_layers: int = 4
    bg_freqs: int = 10
    bg_code_dim: int = 32
    n_ray_samples: int = 14
    n_bg_samples: int = 4
    depth_range: tuple[float, float] = (0.88, 1.12)
    bg_start: float = 0.5
    camera: CameraPrior = field(default_factory=CameraPrior)
    block_channels: list[int] | None = None      # output channels per upsampler block; None: StyleGAN2 rule
    adapter_channels: list[int] | None = None    # nn_cat adapter widths; None: out_channels // 4
    channel_base: int = 32768
    channel_max: int = 1024
    kernel_size: int = 1
    conv_clamp: float | None = 256.0

    def __post_init__(self) -> None:
        if isinstance(self.camera, dict):
            self.camera = CameraPrior(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.camera.items()})
        self.depth_range = tuple(self.depth_range)
        log2 = math.log2(self.img_resolution / self.nerf_resolution)
        if log2 < 0 or log2 != int(log2):
            raise ValueError(f"img_resolution {self.img_resolution} must be nerf_resolution "
                             f"{self.nerf_resolution} times a power of two")
        if self.block_channels is None:
            self.block_channels = [min(self.channel_base // r, self.channel_max) for r in self.block_resolutions]
        if self.adapter_channels is None:
            self.adapter_channels = [c // 4 for c in self.block_channels]
        if not len(self.block_channels) == len(self.adapter_channels) == len(self.block_resolutions):
            raise ValueError("block_channels/adapter_channels must have one entry per upsampler block")

    @property
    def block_resolutions(self) -> list[int]:
        res, out = self.nerf_resolution * 2, []
        while res <= self.img_resolution:
            out.append(res)
            res *= 2
        return out

    @property
    def fg_num_ws(self) -> int:
        return self.fg_layers + 2

    @property
    def num_ws(self) -> int:
        return self.fg_num_ws + 2 * len(self.block_resolutions) + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys: {', '.join(unknown)}")
        return cls(**d)


@dataclass
class SynthesisOutput:
    """Images and intermediates of one synthesis call."""

    img: torch.Tensor                 # [B, C, R, R], nominally in [-1, 1]
    rgb_lr: torch.Tensor              # [B, C, r, r] volume-rendered RGB at the NeRF resolution
    feat_lr: torch.Tensor             # [B, F, r, r] volume-rendered features
    rays: RenderedRays                # per-ray depths and weights
    block_outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # name -> (x, img)


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] + cameras + background code -> image."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("alpha", torch.tensor(1.0))
        self.fg_nerf = ForegroundNeRF(cfg.w_dim, cfg.fg_hidden, cfg.fg_layers, cfg.feature_dim, cfg.fg_freqs,
                                      cfg.img_channels)
        self.bg_nerf = BackgroundNeRF(cfg.bg_code_dim, cfg.bg_hidden, cfg.bg_layers, cfg.feature_dim, cfg.bg_freqs,
                                      cfg.img_channels)
        self.renderer = VolumeRenderer(cfg.n_ray_samples, cfg.n_bg_samples, cfg.depth_range, cfg.bg_start)
        in_ch = cfg.feature_dim
        self.block_names = []
        for res, out_ch, adapter in zip(cfg.block_resolutions, cfg.block_channels, cfg.adapter_channels):
            self.add_module(f"b{res}", SynthesisBlock(in_ch, out_ch, cfg.w_dim, res, cfg.img_channels,
                                                      cfg.kernel_size, cfg.conv_clamp, adapter))
            self.block_names.append(f"b{res}")
            in_ch = out_ch
        self.num_ws = cfg.num_ws

    def n_ray_samples(self) -> int:
        """Samples per ray; an untrained official model (``alpha == -1``) silently uses 20."""
        alpha = float(self.alpha)
        if alpha == -1:
            return 20
        if alpha != 1:
            raise ValueError(f"synthesis.alpha = {alpha}: checkpoints saved during progressive growing "
                             "(0 <= alpha < 1) are not supported")
        return self.cfg.n_ray_samples

    def forward(self, ws: torch.Tensor, world_mat: torch.Tensor, camera_mat: torch.Tensor, bg_code: torch.Tensor, *,
                hierarchical: bool = True, nerf_grad: bool = True, roll: torch.Tensor | None = None,
                fp16: bool = False, keep_blocks: bool = False, max_resolution: int | None = None) -> SynthesisOutput:
        """Render images.

        Args:
            ws: [B, num_ws, w_dim].
            world_mat: camera-to-world [B, 4, 4]; camera_mat: inverse intrinsics [B, 4, 4].
            bg_code: background code [B, bg_code_dim].
            hierarchical: add the fine samples (official default); False renders the coarse samples only.
            nerf_grad: back-propagate through the NeRF; False reproduces the official eval mode, in which
                ws rows 0..fg_num_ws-1 and the background code receive no gradient.
            roll: optional in-plane rotation of the ray grid in radians [B].
            fp16: run the upsampler blocks from the second one on in float16 (CUDA only).
            keep_blocks: keep every block's (x, img) in ``block_outputs``.
            max_resolution: stop the upsampler at the first block that reaches this resolution (a preview: the
                skip architecture's image at that size, for a fraction of the cost); None runs every block.
        """
        lowres = self.render_lowres(ws, world_mat, camera_mat, bg_code, hierarchical=hierarchical, nerf_grad=nerf_grad,
                                    roll=roll)
        return self.upsample(lowres, ws, fp16=fp16, keep_blocks=keep_blocks, max_resolution=max_resolution)

    def render_lowres(self, ws: torch.Tensor, world_mat: torch.Tensor, camera_mat: torch.Tensor, bg_code: torch.Tensor,
                      *, hierarchical: bool = True, nerf_grad: bool = True,
                      roll: torch.Tensor | None = None) -> SynthesisOutput:
        """The volume-rendered half of :meth:`forward`: ``img`` is the NeRF's own RGB [B, C, r, r] (r the NeRF
        resolution), ``feat_lr`` the features the upsampler starts from. The arguments are :meth:`forward`'s."""
        cfg = self.cfg
        B = ws.shape[0]
        assert ws.shape[1:] == (self.num_ws, cfg.w_dim), f"expected ws [B, {self.num_ws}, {cfg.w_dim}], got {tuple(ws.shape)}"
        assert world_mat.shape == (B, 4, 4) and camera_mat.shape == (B, 4, 4), "cameras must be [B, 4, 4]"
        assert bg_code.shape == (B, cfg.bg_code_dim), f"expected bg_code [B, {cfg.bg_code_dim}], got {tuple(bg_code.shape)}"
        origins, directions = ray_bundle(world_mat.float(), camera_mat.float(), cfg.nerf_resolution, roll)
        with contextlib.nullcontext() if nerf_grad else torch.no_grad():
            rays = self.renderer(self.fg_nerf, self.bg_nerf, ws[:, :cfg.fg_num_ws].float(), bg_code.float(), origins,
                                 directions, n_samples=self.n_ray_samples(), hierarchical=hierarchical)
        r = cfg.nerf_resolution
        lowres = rays.features.transpose(1, 2).reshape(B, -1, r, r)
        img, x = lowres[:, :cfg.img_channels], lowres[:, cfg.img_channels:]
        return SynthesisOutput(img=img, rgb_lr=img, feat_lr=x, rays=rays)

    def upsample(self, lowres: SynthesisOutput, ws: torch.Tensor, *, fp16: bool = False, keep_blocks: bool = False,
                 max_resolution: int | None = None) -> SynthesisOutput:
        """The upsampler half of :meth:`forward`, from :meth:`render_lowres`'s output (left unchanged) and the
        same ws [B, num_ws, w_dim]: a frozen NeRF's output can be rendered once and upsampled many times (PTI)."""
        if fp16 and ws.device.type != "cuda":
            raise ValueError("fp16 synthesis is a GPU option; on the CPU the generator runs in float32")
        cfg = self.cfg
        assert ws.shape == (lowres.feat_lr.shape[0], self.num_ws, cfg.w_dim), \
            f"expected ws [{lowres.feat_lr.shape[0]}, {self.num_ws}, {cfg.w_dim}], got {tuple(ws.shape)}"
        ws = ws.float()
        x, img = lowres.feat_lr, lowres.rgb_lr
        out = SynthesisOutput(img=img, rgb_lr=img, feat_lr=x, rays=lowres.rays)
        for i, name in enumerate(self.block_names):
            block_ws = ws[:, cfg.fg_num_ws + 2 * i: cfg.fg_num_ws + 2 * i + 3]
            half = fp16 and i > 0
            with torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext():
                x, img = getattr(self, name)(x, img, block_ws)
            if keep_blocks:
                out.block_outputs[name] = (x, img)
            if max_resolution is not None and img.shape[-1] >= max_resolution:
                break
        out.img = img.float().contiguous()   # the blocks keep their outputs channels-last
        return out


class Generator(nn.Module):
    """Mapping network + synthesis network, with the official module and parameter names."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.mapping_layers, cfg.mapping_lr_multiplier)

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    @property
    def img_resolution(self) -> int:
        return self.cfg.img_resolution

    @property
    def camera_prior(self) -> CameraPrior:
        return self.cfg.camera

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """[n, z_dim] standard normal latents."""
        return torch.randn(n, self.cfg.z_dim, generator=generator).to(self.device)

    def sample_bg_code(self, n: int, generator: torch.Generator, scale: float = 0.65) -> torch.Tensor:
        """[n, bg_code_dim] background codes ~ N(0, scale^2); 0.65 is the official scripts' temperature."""
        return (torch.randn(n, self.cfg.bg_code_dim, generator=generator) * scale).to(self.device)

    def camera_matrices(self, cameras: CameraLike, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cameras in any accepted form -> (world_mat, camera_mat), each [batch_size, 4, 4] on this device."""
        if isinstance(cameras, tuple) and len(cameras) == 2 and all(isinstance(t, torch.Tensor) for t in cameras):
            world, intr = cameras
        else:
            cams = [cameras] if isinstance(cameras, Camera) else list(cameras)
            world, intr = stack_cameras(cams, device=self.device)
        if world.shape[0] == 1 and batch_size > 1:
            world, intr = world.expand(batch_size, 4, 4), intr.expand(batch_size, 4, 4)
        if world.shape[0] != batch_size:
            raise ValueError(f"got {world.shape[0]} cameras for a batch of {batch_size}")
        return world.to(self.device), intr.to(self.device)

    def synthesize(self, ws: torch.Tensor, cameras: CameraLike, bg_code: torch.Tensor, **kwargs: Any) -> SynthesisOutput:
        """ws [B, num_ws, w_dim] seen through ``cameras`` (one per sample, or one for all)."""
        world, intr = self.camera_matrices(cameras, ws.shape[0])
        return self.synthesis(ws, world, intr, bg_code, **kwargs)

    def forward(self, z: torch.Tensor, cameras: CameraLike, bg_code: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **kwargs: Any) -> torch.Tensor:
        """z [B, z_dim] -> image [B, C, R, R]."""
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesize(ws, cameras, bg_code, **kwargs).img
