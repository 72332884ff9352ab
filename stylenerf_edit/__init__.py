"""stylenerf-edit: invert portrait photos into a pretrained StyleNeRF, edit them, and re-render them in 3-D."""

__version__ = "0.1.0"
