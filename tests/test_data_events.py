"""Event datasets: each dataset's own files, written small and synthetic, read back exactly as frames;
the binning against a reference and against tonic; loaders of [B, T, 2, H, W]; one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from event_files import (
    CIFAR10_CLASSES,
    make_cifar10dvs,
    make_gesture_aedat,
    make_gesture_npy,
    make_nmnist,
    random_events,
    reference_frames,
    write_cifar10dvs_aedat,
    write_gesture_npy,
    write_nmnist_bin,
)

import nas.data as data
from nas.cli import main
from nas.data import _event_files, _store
from nas.data._frames import frames_by_count
from nas.errors import NasError


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "default-data-dir"))


def read_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames and labels of an event .beton, straight from the file bytes (no FFCV decoding)."""
    reader = _store.open_reader(path)
    shape = tuple(int(v) for v in reader.handlers["frames"].shape)
    names = reader.metadata.dtype.names
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    size = int(np.prod(shape))
    frames = np.stack([np.asarray(raw[int(p) : int(p) + size]).reshape(shape) for p in reader.metadata[names[0]]])
    return frames, np.asarray(reader.metadata[names[1]], dtype=np.int64)


def nothing_written(out: Path) -> bool:
    return not out.exists() or not [p for p in out.iterdir() if p.suffix in (".beton", ".json", ".tmp")]


# ---------------------------------------------------------------- binning
def test_frames_by_event_count_match_a_reference_and_tonic() -> None:
    rng = np.random.default_rng(0)
    ev = random_events(rng, 103, 34)  # 103 = 10 * 10 + 3: the last frame takes the 3 left over
    events = _event_files.Events(*(ev[k] for k in ("x", "y", "p", "t")))
    frames, saturated = frames_by_count(events, 10, 34, 34, Path("r.bin"))
    assert frames.dtype == np.uint8 and frames.shape == (10, 2, 34, 34) and saturated == 0
    assert np.array_equal(frames, reference_frames(ev, 10, 34, 34))
    assert frames.reshape(10, -1).sum(1).tolist() == [10] * 9 + [13]
    # tonic's n_event_bins drops the remainder instead; with T dividing N the two agree exactly.
    from tonic.transforms import ToFrame

    even = {k: v[:100] for k, v in ev.items()}
    structured = np.zeros(100, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    for k in ("x", "y", "t", "p"):
        structured[k] = even[k]
    ours, _ = frames_by_count(_event_files.Events(*(even[k] for k in ("x", "y", "p", "t"))), 10, 34, 34, Path("r"))
    theirs = ToFrame(sensor_size=(34, 34, 2), n_event_bins=10)(structured)
    assert np.array_equal(ours, theirs)


def test_downsampled_grid_sums_blocks_and_counts_saturate() -> None:
    x = np.array([0, 1, 126, 127] + [5] * 300)
    y = np.array([0, 1, 127, 126] + [9] * 300)
    events = _event_files.Events(x, y, np.zeros_like(x), np.arange(x.size))
    frames, saturated = frames_by_count(events, 1, 128, 64, Path("r"))
    assert frames[0, 0, 0, 0] == 2 and frames[0, 0, 63, 63] == 2  # 2x2 sensor blocks -> one pixel
    assert frames[0, 0, 4, 2] == 255 and saturated == 1  # 300 events in one pixel saturate at 255


def test_t_that_does_not_fit_the_recording_names_the_file() -> None:
    events = _event_files.Events(*(np.zeros(5, dtype=np.int64) for _ in range(4)))
    with pytest.raises(NasError, match=r"r\.bin: 5 events cannot fill T=8 frames"):
        frames_by_count(events, 8, 34, 34, Path("r.bin"))


# ---------------------------------------------------------------- round trips, one per format
def test_nmnist_round_trips_exactly(tmp_path: Path) -> None:
    written = make_nmnist(tmp_path / "src")
    result = data.build("nmnist", src=tmp_path / "src", out=tmp_path / "out")
    info = result.info
    assert (info.time_steps, info.in_chans, info.img_size, info.num_classes) == (10, 2, 34, 10)
    assert (info.train_count, info.val_count) == (20, 10)
    for split, path in (("Train", result.train_path), ("Test", result.val_path)):
        frames, labels = read_frames(path)
        keys = sorted(k for k in written if k[0] == split)
        assert labels.tolist() == [k[1] for k in keys]
        for frame, key in zip(frames, keys, strict=True):
            assert np.array_equal(frame, reference_frames(written[key], 10, 34, 34))
    assert data.get_info("nmnist", tmp_path / "src") == info  # the folder's listing alone gives the same info
    sidecar = _store._read_sidecar(result.sidecar_path)
    assert sidecar["frames"]["time_steps"] == 10 and "event count" in sidecar["frames"]["binning"]
    assert data.build("nmnist", src=tmp_path / "src", out=tmp_path / "out").cached


def test_dvsgesture_npy_release_round_trips(tmp_path: Path) -> None:
    written = make_gesture_npy(tmp_path / "src")
    result = data.build("dvsgesture-t4", src=tmp_path / "src", out=tmp_path / "out")
    assert result.info.name == "dvsgesture-t4" and result.info.shape_text() == "T=4 x 2x64x64"
    frames, labels = read_frames(result.train_path)
    train = sorted((p for p in written if "ibmGestureTrain" in str(p)), key=str)
    assert labels.tolist() == [written[p][0] for p in train]
    for frame, path in zip(frames, train, strict=True):
        assert np.array_equal(frame, reference_frames(written[path][1], 4, 128, 64))


def test_dvsgesture_original_aedat3_release_round_trips(tmp_path: Path) -> None:
    written = make_gesture_aedat(tmp_path / "src")
    result = data.build("dvsgesture", src=tmp_path / "src", out=tmp_path / "out")
    assert (result.info.train_count, result.info.val_count, result.info.time_steps) == (11, 11, 16)
    for name, path in (("user01_fluorescent", result.train_path), ("user24_led", result.val_path)):
        frames, labels = read_frames(path)
        assert labels.tolist() == list(range(11))
        for label in range(11):
            assert np.array_equal(frames[label], reference_frames(written[(name, label)], 16, 128, 64))


def test_cifar10dvs_round_trips_with_the_papers_split(tmp_path: Path) -> None:
    written = make_cifar10dvs(tmp_path / "src", per_class=10)
    result = data.build("cifar10dvs-t8", src=tmp_path / "src", out=tmp_path / "out")
    # 90 % of each class trains, by the number in the file name (9 of 10 here; 900 of 1,000 in the release).
    assert (result.info.train_count, result.info.val_count) == (90, 10)
    frames, labels = read_frames(result.val_path)
    assert labels.tolist() == list(range(10))
    for label, name in enumerate(CIFAR10_CLASSES):
        path = tmp_path / "src" / name / f"cifar10_{name}_9.aedat"
        assert np.array_equal(frames[label], reference_frames(written[path][1], 8, 128, 64))


def test_tonic_save_to_folders_are_found(tmp_path: Path) -> None:
    make_nmnist(tmp_path / "src" / "NMNIST", per_digit=(1, 1))
    assert data.get_info("nmnist", tmp_path / "src").train_count == 10


# ---------------------------------------------------------------- loaders
def test_loaders_yield_frame_sequences_equal_to_the_stored_counts(tmp_path: Path) -> None:
    make_nmnist(tmp_path / "src")
    train, val, info = data.make_loaders("nmnist", src=tmp_path / "src", data_dir=tmp_path / "out", batch_size=4,
                                         augment=False)
    stored, labels = read_frames(_store.build("nmnist", src=tmp_path / "src", out=tmp_path / "out").val_path)
    seen = []
    for frames, y in val:
        assert frames.dtype == torch.float32 and frames.shape[1:] == (10, 2, 34, 34)
        seen.append((frames.clone(), y.clone()))
    assert torch.equal(torch.cat([f for f, _ in seen]), torch.from_numpy(stored).float())
    assert torch.cat([y for _, y in seen]).tolist() == labels.tolist()
    batch, y = next(iter(train))
    assert batch.shape == (4, 10, 2, 34, 34) and y.shape == (4,)
    # Augmented: one shift per sample for all its frames, zero fill, counts unchanged where they stay.
    aug_train, _, _ = data.make_loaders("nmnist", src=tmp_path / "src", data_dir=tmp_path / "out", batch_size=4)
    shifted, _ = next(iter(aug_train))
    assert shifted.shape == (4, 10, 2, 34, 34) and (shifted >= 0).all() and shifted.sum() <= batch.sum() + 1e9


def test_gpu_layout_of_the_event_pipeline_gives_the_same_frames(tmp_path: Path) -> None:
    # The CUDA pipeline (uint8 frames, ToDevice, conversion by torch on the device) run on the CPU device.
    from nas.data._ffcv import Loader, OrderOption
    from nas.data._loaders import image_pipeline, label_pipeline

    make_nmnist(tmp_path / "src")
    result = data.build("nmnist-t6", src=tmp_path / "src", out=tmp_path / "out")
    ops = image_pipeline(result.info, torch.device("cpu"), augment=False, torch_normalize=True)
    assert [type(op).__name__ for op in ops] == ["NDArrayDecoder", "ShiftFrames", "ToTensor", "ToDevice",
                                                 "TorchNormalize"]
    loader = Loader(str(result.val_path), batch_size=4, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={"frames": ops, "label": label_pipeline(torch.device("cpu"))}, drop_last=False)
    got = torch.cat([x.clone() for x, _ in loader])
    stored, _ = read_frames(result.val_path)
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(stored).float())


# ---------------------------------------------------------------- bad input: one line, nothing written
def test_wrong_layout_says_which_files_were_expected(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for name, expected in (("nmnist", "no Train/ and Test/ folders; nmnist expects Train/<digit>/*.bin"),
                           ("dvsgesture", "neither ibmGestureTrain/ + ibmGestureTest/ nor trials_to_train.txt"),
                           ("cifar10dvs", "no class folder airplane/; cifar10dvs expects one folder per class")):
        with pytest.raises(NasError, match=expected.replace("+", r"\+").replace("*", r"\*")):
            data.build(name, src=tmp_path / "src", out=tmp_path / "out")
    make_cifar10dvs(tmp_path / "c4", per_class=2)
    for path in (tmp_path / "c4" / "dog").iterdir():
        path.rename(path.with_suffix(".aedat4"))
    with pytest.raises(NasError, match=r"dog/ holds \.aedat4 files"):
        data.build("cifar10dvs", src=tmp_path / "c4", out=tmp_path / "out")
    assert nothing_written(tmp_path / "out")


def test_truncated_recordings_name_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    make_nmnist(tmp_path / "nm", per_digit=(1, 1))
    victim = tmp_path / "nm" / "Train" / "3" / "00000.bin"
    victim.write_bytes(victim.read_bytes()[:-2])
    with pytest.raises(NasError, match=rf"{victim}: truncated N-MNIST recording"):
        data.build("nmnist", src=tmp_path / "nm", out=tmp_path / "out")
    make_gesture_aedat(tmp_path / "ga")
    victim = tmp_path / "ga" / "DvsGesture" / "user24_led.aedat"
    victim.write_bytes(victim.read_bytes()[:-12])
    with pytest.raises(NasError, match=rf"{victim}: truncated AEDAT 3.1 recording"):
        data.build("dvsgesture", src=tmp_path / "ga", out=tmp_path / "out")
    make_cifar10dvs(tmp_path / "cd", per_class=2)
    victim = tmp_path / "cd" / "cat" / "cifar10_cat_1.aedat"
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(NasError, match=rf"{victim}: truncated AEDAT 2.0 recording"):
        data.build("cifar10dvs", src=tmp_path / "cd", out=tmp_path / "out")
    make_gesture_npy(tmp_path / "gn")
    victim = tmp_path / "gn" / "ibmGestureTest" / "user01_led" / "4.npy"
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(NasError, match=rf"{victim}: truncated or not a \.npy array"):
        data.build("dvsgesture", src=tmp_path / "gn", out=tmp_path / "out")
    write_gesture_npy(victim, random_events(rng, 30, 128))  # mend it for the next check
    assert nothing_written(tmp_path / "out")


def test_recordings_of_another_dataset_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    make_nmnist(tmp_path / "nm", per_digit=(1, 1))
    # A DVS128 recording (128x128 sensor) dropped among N-MNIST's 34x34 ones.
    write_nmnist_bin(tmp_path / "nm" / "Train" / "7" / "00000.bin", random_events(rng, 60, 128))
    with pytest.raises(NasError, match=r"Train/7/00000\.bin: event [xy]=\d+ outside the nmnist sensor \(34x34"):
        data.build("nmnist", src=tmp_path / "nm", out=tmp_path / "out")
    # A CIFAR10-DVS recording (AEDAT 2.0) where DVS Gesture's AEDAT 3.1 is expected.
    make_gesture_aedat(tmp_path / "ga")
    write_cifar10dvs_aedat(tmp_path / "ga" / "DvsGesture" / "user01_fluorescent.aedat", random_events(rng, 60, 128))
    with pytest.raises(NasError, match="AEDAT 2.0 file, expected AEDAT 3.1; a recording of another dataset"):
        data.build("dvsgesture", src=tmp_path / "ga", out=tmp_path / "out")
    # An N-MNIST .bin renamed .aedat in a CIFAR10-DVS class folder.
    make_cifar10dvs(tmp_path / "cd", per_class=2)
    write_nmnist_bin(tmp_path / "cd" / "frog" / "cifar10_frog_0.aedat", random_events(rng, 60, 34))
    with pytest.raises(NasError, match=r"cifar10_frog_0\.aedat: not an AEDAT file"):
        data.build("cifar10dvs", src=tmp_path / "cd", out=tmp_path / "out")
    assert nothing_written(tmp_path / "out")


def test_cli_event_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_nmnist(tmp_path / "nm", per_digit=(1, 1), events=20)
    cases = [
        (["data", "build", "nmnist-t64", "--src", str(tmp_path / "nm")], "events cannot fill T=64 frames"),
        (["data", "build", "nmnist-t0", "--src", str(tmp_path / "nm")], "T must be at least 1"),
        (["data", "build", "dvsgesture", "--src", str(tmp_path / "nm")], "neither ibmGestureTrain/"),
        (["data", "build", "cifar10dvs"], "needs --src PATH (one folder per class"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert nothing_written(tmp_path / "out")
    shutil.rmtree(tmp_path / "nm")


def test_aedat2_header_of_comment_lines_alone_is_read(tmp_path: Path) -> None:
    ev = random_events(np.random.default_rng(7), 20, 128)
    path = tmp_path / "cifar10_cat_0.aedat"
    write_cifar10dvs_aedat(path, ev)
    with_version = _event_files.read_aedat2_cifar10dvs(path)
    blob = path.read_bytes()
    path.write_bytes(b"# no version line, as some tools write\r\n" + blob[blob.index(b"\n") + 1 :])
    without = _event_files.read_aedat2_cifar10dvs(path)
    for a, b, key in zip(with_version, without, ("x", "y", "p", "t"), strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, ev[key])
