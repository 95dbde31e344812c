"""Video data: EPIC-Kitchens MM-SADA domains and procedurally generated video domains (same layout).

Submodules: :mod:`features.data.epic` (split files, clip sampling, the ``EpicClips`` dataset; the
MM-SADA split files ship in ``features/data/epic_splits/``) and :mod:`features.data.synthetic_video`
(two generated domains with planted negatives). They are imported on first use so that
``import features.data`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EpicClips": "features.data.epic",
    "EpicSegment": "features.data.epic",
    "FrameReadError": "features.data.epic",
    "load_split": "features.data.epic",
    "splits_dir": "features.data.epic",
    "DOMAINS": "features.data.epic",
    "SyntheticVideoConfig": "features.data.synthetic_video",
    "generate_video_domains": "features.data.synthetic_video",
    "tiny_config": "features.data.synthetic_video",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'features.data' has no attribute {name!r}")
