"""Batch processing of photo folders: discovery, a SQLite manifest, atomic per-photo output folders, resume,
and local or Ray execution (see ``run``)."""

from .discover import PHOTO_SUFFIXES, assign_output_dirs, discover_photos
from .engines import ENGINES, EngineError
from .manifest import Manifest, ManifestError, PhotoRecord
from .run import (MANIFEST_NAME, BatchError, BatchOptions, BatchReport, PlannedPhoto, format_plan, format_summary,
                  run_batch)
from .worker import PhotoResult, PhotoTask, WorkerJob, process_batch

__all__ = [
    "ENGINES", "MANIFEST_NAME", "PHOTO_SUFFIXES", "BatchError", "BatchOptions", "BatchReport", "EngineError",
    "Manifest", "ManifestError", "PhotoRecord", "PhotoResult", "PhotoTask", "PlannedPhoto", "WorkerJob",
    "assign_output_dirs", "discover_photos", "format_plan", "format_summary", "process_batch", "run_batch",
]
