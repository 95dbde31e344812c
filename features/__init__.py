"""Turning video (or any modality) into features ``f^k`` and keeping them.

``InceptionI3d`` (pytorch-i3d compatible backbone) and ``TwoStream`` (per-modality backbones and
heads, late fusion) are imported on first access so that ``import features`` (and lighter
submodules such as ``features.snapshot``) do not pay for torch until a model is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "InceptionI3d": "features.i3d",
    "CheckpointMismatchError": "features.i3d",
    "TwoStream": "features.two_stream",
    "TwoStreamOutput": "features.two_stream",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'features' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
