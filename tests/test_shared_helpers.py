"""The helpers every layer shares, defined once in features: atomic writes, devices, the cache, domain labels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from features.atomic_io import atomic_directory, atomic_path, atomic_torch_save, atomic_write_bytes, atomic_write_text
from features.cache import cache_dir
from features.devices import resolve_device


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two ±")
    assert path.read_text(encoding="utf-8") == "two ±"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.bin", "out.txt", "sub"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_atomic_write_failure_keeps_the_old_file_and_removes_the_temp(tmp_path: Path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path, suffix=".tmp.png") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith("out.txt.") and tmp.name.endswith(".tmp.png")
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_torch_save_round_trip(tmp_path: Path):
    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "m.pt", prefix=".m.pt.", fsync=True)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_atomic_directory(tmp_path: Path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "partial").write_text("x")  # left by an interrupted run
    with atomic_directory(root) as tmp:
        (tmp / "done").write_text("y")
    assert [p.name for p in root.iterdir()] == ["done"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(root) as tmp:
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["data"] and [p.name for p in root.iterdir()] == ["done"]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(RuntimeError):
        resolve_device("no-such-device")


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MMIR_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("MMIR_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "mmir"


def test_the_moved_names_are_the_same_objects_everywhere():
    import features.domain_discriminator as fd
    import features.domains as fdom
    import features.registry_files
    import mmir_env
    import mmir_env.discriminator as md
    import mmir_env.domains as mdom
    from features.snapshot import DOMAINS, OUTSIDE_CLASSES
    from mmir_env.sources import OUTSIDE_CLASSES as ENV_OUTSIDE

    assert md.DomainDiscriminator is fd.DomainDiscriminator is mmir_env.DomainDiscriminator
    assert md.seeded_discriminator is fd.seeded_discriminator and md.grad_reverse is fd.grad_reverse
    assert mdom.domain_id is fdom.domain_id and (mdom.SOURCE, mdom.TARGET) == (0, 1)
    assert DOMAINS == ("source", "target") and OUTSIDE_CLASSES == ENV_OUTSIDE == -1
    assert features.registry_files.cache_dir is cache_dir
