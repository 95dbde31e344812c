"""features.snapshot: round trips, atomic writes under SIGKILL, validation of broken files, fork safety."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from snapshot_helpers import BROKEN_KINDS, MODALITIES, D, K, broken_snapshot, make_data, small_snapshot, write_snapshot

from features.snapshot import SCHEMA_VERSION, Snapshot, SnapshotError, SnapshotWriter
from mmir_env.discriminator import DomainDiscriminator, seeded_discriminator

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("known_rows", [False, True], ids=["streamed", "preallocated"])
def test_float32_round_trip_is_bit_identical(tmp_path: Path, known_rows: bool) -> None:
    data = make_data(seed=1)
    path = write_snapshot(tmp_path / "s.h5", data, dtype="float32", known_rows=known_rows)
    snap = Snapshot(path)
    assert snap.schema_version == SCHEMA_VERSION and snap.feature_dim == D and snap.num_classes == K
    assert snap.modalities == MODALITIES and snap.step == 7 and snap.stage == 2 and snap.config == {"test": True}
    for domain, v in data.items():
        assert snap.num_rows(domain) == len(v["label"])
        for m in MODALITIES:
            got = snap.features(domain, m)
            assert got.dtype == np.float32
            assert got.tobytes() == v["features"][m].tobytes()
        np.testing.assert_array_equal(snap.labels(domain), v["label"])
        np.testing.assert_array_equal(snap.is_negative(domain), v["is_negative"])
        assert snap.uids(domain).tolist() == v["uid"].tolist()
    # Every finished dataset is contiguous (memory-mappable), whether streamed or preallocated.
    with h5py.File(path) as f:
        assert f["/source/features/rgb"].chunks is None and f["/target/uid"].chunks is None
    assert snap.memmap("source", "rgb") is not None


def test_float16_round_trip_within_rounding(tmp_path: Path) -> None:
    data = make_data(seed=2)
    snap = Snapshot(write_snapshot(tmp_path / "s.h5", data, dtype="float16"))
    for domain, v in data.items():
        for m in MODALITIES:
            got = snap.features(domain, m)
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, v["features"][m].astype(np.float16))
            np.testing.assert_allclose(got.astype(np.float32), v["features"][m], rtol=2**-11, atol=2**-24)


def test_read_rows_any_shape_with_duplicates(tmp_path: Path) -> None:
    data = make_data()
    snap = Snapshot(write_snapshot(tmp_path / "s.h5", data))
    index = np.array([[5, 3, 5], [59, 0, 3]])
    np.testing.assert_array_equal(snap.read_rows("source", "flow", index), data["source"]["features"]["flow"][index])
    unmapped = Snapshot(snap.path, memory_map=False)  # sorted, de-duplicated HDF5 reads
    assert unmapped.memmap("source", "flow") is None
    np.testing.assert_array_equal(
        unmapped.read_rows("source", "flow", index), data["source"]["features"]["flow"][index]
    )
    with pytest.raises(IndexError, match=r"/source/features/flow: row index out of range \[0, 60\)"):
        unmapped.read_rows("source", "flow", [60])


def test_discriminator_weights_round_trip_without_pickle(tmp_path: Path) -> None:
    path = small_snapshot(tmp_path / "s.h5")
    snap = Snapshot(path)
    with h5py.File(path) as f:  # stored as plain datasets, with the attributes that rebuild the module
        group = f["/discriminator/flow"]
        assert sorted(group) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
        assert group.attrs["architecture"] == "DomainDiscriminator" and group.attrs["hidden_dim"] == 128
    for i, m in enumerate(MODALITIES):
        loaded = snap.load_discriminator(m)
        reference = seeded_discriminator(D, i)
        assert isinstance(loaded, DomainDiscriminator) and not loaded.training
        for key, value in reference.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    # Loading into a module of another width names the group and what did not fit.
    with pytest.raises(SnapshotError, match=r"/discriminator/rgb: weights do not fit"):
        snap.load_discriminator("rgb", into=DomainDiscriminator(D, hidden_dim=64))


def test_missing_discriminator_is_named(tmp_path: Path) -> None:
    snap = Snapshot(write_snapshot(tmp_path / "s.h5", make_data(), discriminator_seed=None))
    assert not snap.has_discriminator("rgb")
    with pytest.raises(SnapshotError, match=r"missing group /discriminator/rgb"):
        snap.load_discriminator("rgb")


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_bad_input_has_a_specific_message(tmp_path: Path, kind: str) -> None:
    path, words = broken_snapshot(tmp_path / f"{kind}.h5", kind)
    with pytest.raises(SnapshotError) as info:
        Snapshot(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_problems_lists_every_problem(tmp_path: Path) -> None:
    path = small_snapshot(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        del f["/target/uid"]
        f["/source/features/rgb"][0, 0] = np.inf
    found = Snapshot(path, validate=False).problems()
    assert any("missing dataset /target/uid" in p for p in found)
    assert any("/source/features/rgb: 1 rows with NaN or inf" in p for p in found)


def test_writer_rejects_bad_rows_naming_them(tmp_path: Path) -> None:
    with SnapshotWriter(tmp_path / "w.h5", feature_dim=4, num_classes=3, dtype="float16") as w:
        bad = np.zeros((3, 4), np.float32)
        bad[1, 2] = 1e6  # beyond float16
        with pytest.raises(ValueError, match=r"1 rows with values beyond the float16 range \(batch rows \[1\]\)"):
            w.append("source", {"rgb": bad})
        with pytest.raises(ValueError, match=r"label for source must lie in \[0, 3\)"):
            w.append("source", label=np.array([0, -1]))
        with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
            w.append("target", {"flow": np.zeros((2, 5), np.float32)})
        w.abort()
    assert not (tmp_path / "w.h5").exists() and not (tmp_path / "w.h5.tmp").exists()


def test_unequal_row_counts_fail_on_close_and_leave_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    writer = SnapshotWriter(path, feature_dim=4, num_classes=2, dtype="float32")
    writer.append("source", {"rgb": np.zeros((3, 4)), "flow": np.zeros((2, 4))}, label=[0, 1, 1], uid=["a", "b", "c"])
    with pytest.raises(SnapshotError, match=r"/source/features/flow: 2 rows written, expected 3"):
        writer.close()
    assert not path.exists() and not writer.tmp_path.exists()


def test_exception_inside_with_keeps_earlier_snapshot(tmp_path: Path) -> None:
    path = small_snapshot(tmp_path / "s.h5")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="backbone failed"):
        with SnapshotWriter(path, feature_dim=D, num_classes=K) as w:
            w.append("source", {"rgb": np.ones((4, D))})
            raise RuntimeError("backbone failed")
    assert path.read_bytes() == before
    assert not path.with_name("s.h5.tmp").exists()
    Snapshot(path)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from features.snapshot import SnapshotWriter
    with SnapshotWriter(sys.argv[1], feature_dim=32, num_classes=4, dtype="float32") as w:
        while True:
            w.append("source", {"rgb": np.ones((8, 32)), "flow": np.ones((8, 32))}, label=np.zeros(8, int), uid=list("abcdefgh"))
            w.flush()
            time.sleep(0.01)
    """
)


def test_sigkill_mid_write_leaves_earlier_snapshot_intact(tmp_path: Path) -> None:
    path = small_snapshot(tmp_path / "s.h5")
    before = path.read_bytes()
    tmp = path.with_name("s.h5.tmp")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not tmp.exists() or tmp.stat().st_size < 20_000:  # several appends have landed
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never produced its tmp file"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    Snapshot(path).validate(full=True)
    # The crashed writer's leftovers do not block the next write of the same name.
    small_snapshot(path, dtype="float16")
    assert Snapshot(path).dtype == np.float16 and not tmp.exists()


def _read_in_child(snap: Snapshot, queue: mp.Queue[float]) -> None:
    queue.put(float(snap.read_rows("target", "rgb", np.arange(10)).sum()))


def test_reader_reopens_after_fork_and_pickles_without_handle(tmp_path: Path) -> None:
    data = make_data()
    snap = Snapshot(write_snapshot(tmp_path / "s.h5", data))
    expected = float(data["target"]["features"]["rgb"][:10].sum())
    assert float(snap.read_rows("target", "rgb", np.arange(10)).sum()) == expected  # parent handle opened
    parent_handle = snap.file
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(snap, queue))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0 and queue.get(timeout=5) == expected
    assert snap.file is parent_handle  # the parent keeps its own handle
    clone = pickle.loads(pickle.dumps(snap))
    assert not clone.is_open
    np.testing.assert_array_equal(clone.features("source", "flow"), data["source"]["features"]["flow"])


def test_dataloader_workers_read_the_snapshot(tmp_path: Path) -> None:
    data = make_data()
    snap = Snapshot(write_snapshot(tmp_path / "s.h5", data))

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return snap.num_rows("source")

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.from_numpy(snap.read_rows("source", "rgb", np.array([i]))[0])

    snap.features("source", "rgb")  # the parent has an open handle before the workers fork
    loader = torch.utils.data.DataLoader(Rows(), batch_size=16, num_workers=2, multiprocessing_context="fork")
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, data["source"]["features"]["rgb"])
