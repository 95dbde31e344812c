"""Video data: EPIC-Kitchens MM-SADA domains and procedurally generated video domains (same layout).

Submodules: :mod:`features.data.epic` (split files, clip sampling, the ``EpicClips`` dataset) and
:mod:`features.data.synthetic_video` (two generated domains with planted negatives). They are
imported on first use so that ``import features.data`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from features.data.shared import SHARED_DATA_ENV, find_shared_data, shared_data_dir

_LAZY = {
    "EpicClips": "features.data.epic",
    "EpicSegment": "features.data.epic",
    "FrameReadError": "features.data.epic",
    "load_split": "features.data.epic",
    "DOMAINS": "features.data.epic",
    "SyntheticVideoConfig": "features.data.synthetic_video",
    "generate_video_domains": "features.data.synthetic_video",
    "tiny_config": "features.data.synthetic_video",
}

__all__ = ["SHARED_DATA_ENV", "find_shared_data", "shared_data_dir", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'features.data' has no attribute {name!r}")
