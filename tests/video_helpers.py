"""Shared helpers for the video-side tests (features.i3d, features.data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from features.data.shared import find_shared_data


def shared_data_or_skip() -> Path:
    """The shared data folder, or skip naming where it was looked for."""
    path = find_shared_data()
    if path is None:
        pytest.skip("shared data absent: neither $MMIR_SHARED_DATA nor <repo>/../shared/data exists")
    return path


def i3d_reference(in_channels: int) -> dict[str, Any]:
    """Facts about the pytorch-i3d port for ``in_channels`` from ``i3d_state_dict_keys.json``."""
    path = shared_data_or_skip() / "i3d_state_dict_keys.json"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return json.loads(path.read_text())["models"][f"in_channels={in_channels}"]


def tiny_video_root(tmp_path_factory: pytest.TempPathFactory, seed: int = 0) -> Path:
    """A tiny two-domain synthetic dataset in the EPIC layout (``S`` and ``T`` domains)."""
    from features.data.synthetic_video import generate_video_domains, tiny_config

    return generate_video_domains(tmp_path_factory.mktemp("epic_layout"), tiny_config(seed))
