"""Our implementation of the official StyleNeRF FFHQ generator, its cameras and its checkpoint formats."""

from .camera import Camera, CameraPrior
from .checkpoint import (GeneratorInfo, describe, generator_from_official, load_generator, load_with_info,
                         resolve_device, save_pretrained)
from .network import Generator, GeneratorConfig, SynthesisOutput
from .official_pickle import read_official_pickle

__all__ = [
    "Camera", "CameraPrior", "Generator", "GeneratorConfig", "GeneratorInfo", "SynthesisOutput", "describe",
    "generator_from_official", "load_generator", "load_with_info", "read_official_pickle", "resolve_device",
    "save_pretrained",
]
