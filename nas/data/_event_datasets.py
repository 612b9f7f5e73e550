"""The three event datasets: where their recordings lie in the user's folder, their splits, and frames.

``scan`` lists the samples of a folder from its layout alone (cheap: no event is read), so the
dataset's size and classes are known before a build; ``load`` reads every recording and bins it into
T frames (``nas.data._frames``). Layouts are those the datasets ship in (and tonic's ``save_to``
folders, one level down):

- ``nmnist``: ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``.
- ``dvsgesture``: tonic's preprocessed release ``ibmGestureTrain/userNN_<light>/<label>.npy`` and
  ``ibmGestureTest/...``, or the original ``DvsGesture/`` folder: ``userNN_<light>.aedat`` (AEDAT 3.1),
  ``userNN_<light>_labels.csv`` (class 1-11, start and end in µs; one sample per row) and
  ``trials_to_train.txt`` / ``trials_to_test.txt``.
- ``cifar10dvs``: ``<class>/*.aedat`` of the original release (AEDAT 2.0), ten class folders. It
  has no split; as SpikingResformer does, the first 90 % of each class (by the number in the file
  name: 900 of 1,000) train and the rest validate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.data import _event_files as files
from nas.data._frames import BINNING, frames_by_count
from nas.data._sources import RawData
from nas.errors import NasError

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_GESTURES = (
    "hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise", "right_arm_counter_clockwise",
    "left_arm_clockwise", "left_arm_counter_clockwise", "arm_roll", "air_drums", "air_guitar", "other_gestures",
)
CIFAR10DVS_TRAIN_SHARE = 0.9


@dataclass(frozen=True)
class EventSpec:
    """One event dataset: sensor side, the side its frames are stored at, default T, classes."""

    name: str
    sensor: int
    size: int
    time_steps: int
    classes: tuple[str, ...]
    nominal_counts: tuple[int, int]  # train, val of the full release
    layout: str


SPECS: dict[str, EventSpec] = {
    # N-MNIST: full 34x34 sensor; T=10 is a common choice (no paper recipe in the reference notes).
    "nmnist": EventSpec("nmnist", 34, 34, 10, tuple(str(d) for d in range(10)), (60000, 10000),
                        "Train/<digit>/*.bin and Test/<digit>/*.bin (the N-MNIST release)"),
    # DVS128 Gesture and CIFAR10-DVS: SpikingResformer's recipe, T=16 frames at 64x64.
    "dvsgesture": EventSpec("dvsgesture", 128, 64, 16, _GESTURES, (1077, 264),
                            "ibmGestureTrain/ and ibmGestureTest/ of userNN_<light>/<label>.npy (tonic's release), "
                            "or DvsGesture/ with userNN_<light>.aedat, *_labels.csv and trials_to_train.txt / "
                            "trials_to_test.txt (the original release)"),
    "cifar10dvs": EventSpec("cifar10dvs", 128, 64, 16, _CIFAR10_CLASSES, (9000, 1000),
                            "one folder per class (airplane ... truck) of *.aedat recordings (the original "
                            "AEDAT 2.0 release)"),
}


@dataclass(frozen=True)
class Sample:
    """One sample: a recording file, its label, and for a labelled segment of a longer file its µs window."""

    path: Path
    label: int
    window: tuple[int, int] | None = None


@dataclass(frozen=True)
class Layout:
    """The samples a folder holds, per split, and how to read one of its files."""

    train: list[Sample]
    val: list[Sample]
    read: Callable[[Path], files.Events]


def _root(src: Path, marker: Callable[[Path], bool], tonic_folder: str) -> Path | None:
    for folder in (src, src / tonic_folder):
        if marker(folder):
            return folder
    return None


def _error(src: Path, spec: EventSpec, problem: str) -> NasError:
    return NasError(f"--src {src}: {problem}; {spec.name} expects {spec.layout}")


def _sorted_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix)


def _scan_nmnist(src: Path, spec: EventSpec) -> Layout:
    root = _root(src, lambda f: (f / "Train").is_dir() and (f / "Test").is_dir(), "NMNIST")
    if root is None:
        raise _error(src, spec, "no Train/ and Test/ folders")
    splits: list[list[Sample]] = []
    for split in ("Train", "Test"):
        samples: list[Sample] = []
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if folder.name not in spec.classes:
                raise _error(src, spec, f"{split}/{folder.name} is not a digit folder (0-9)")
            samples += [Sample(path, int(folder.name)) for path in _sorted_files(folder, ".bin")]
        if not samples:
            raise _error(src, spec, f"no .bin recordings under {split}/<digit>/")
        splits.append(samples)
    return Layout(splits[0], splits[1], files.read_nmnist)


def _scan_gesture_npy(root: Path, src: Path, spec: EventSpec) -> Layout:
    splits: list[list[Sample]] = []
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        samples: list[Sample] = []
        for trial in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for path in _sorted_files(trial, ".npy"):
                if not path.stem.isdigit() or int(path.stem) >= len(spec.classes):
                    raise _error(src, spec, f"{split}/{trial.name}/{path.name}: the file name must be the label "
                                            f"0-{len(spec.classes) - 1}")
                samples.append(Sample(path, int(path.stem)))
        if not samples:
            raise _error(src, spec, f"no .npy recordings under {split}/userNN_<light>/")
        splits.append(samples)
    return Layout(splits[0], splits[1], files.read_gesture_npy)


def _segments(recording: Path, src: Path, spec: EventSpec) -> list[Sample]:
    labels = recording.with_name(recording.stem + "_labels.csv")
    if not labels.is_file():
        raise _error(src, spec, f"{recording.name} has no {labels.name}")
    try:
        rows = np.loadtxt(labels, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise NasError(f"{labels}: expected rows of class,startTime_usec,endTime_usec ({error})") from None
    if rows.size and rows.shape[1] != 3:
        raise NasError(f"{labels}: expected 3 columns (class,startTime_usec,endTime_usec), got {rows.shape[1]}")
    out = []
    for number, (label, start, end) in enumerate(rows, start=2):
        if not 1 <= label <= len(spec.classes) or end <= start:
            raise NasError(f"{labels}:{number}: class must be 1-{len(spec.classes)} and end after start, got "
                           f"{label},{start},{end}")
        out.append(Sample(recording, int(label) - 1, (int(start), int(end))))
    return out


def _scan_gesture_aedat(root: Path, src: Path, spec: EventSpec) -> Layout:
    splits: list[list[Sample]] = []
    for listing in ("trials_to_train.txt", "trials_to_test.txt"):
        names = [line.strip() for line in (root / listing).read_text().splitlines() if line.strip()]
        samples: list[Sample] = []
        for name in names:
            recording = root / name
            if not recording.is_file():
                raise _error(src, spec, f"{listing} lists {name}, which is missing")
            samples += _segments(recording, src, spec)
        if not samples:
            raise _error(src, spec, f"{listing} lists no labelled recording")
        splits.append(samples)
    return Layout(splits[0], splits[1], files.read_aedat3_polarity)


def _scan_gesture(src: Path, spec: EventSpec) -> Layout:
    root = _root(src, lambda f: (f / "ibmGestureTrain").is_dir() and (f / "ibmGestureTest").is_dir(), "DVSGesture")
    if root is not None:
        return _scan_gesture_npy(root, src, spec)
    original = lambda f: (f / "trials_to_train.txt").is_file() and (f / "trials_to_test.txt").is_file()  # noqa: E731
    root = _root(src, original, "DvsGesture")
    if root is not None:
        return _scan_gesture_aedat(root, src, spec)
    raise _error(src, spec, "neither ibmGestureTrain/ + ibmGestureTest/ nor trials_to_train.txt + trials_to_test.txt")


def _file_number(path: Path) -> int:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else -1


def _scan_cifar10dvs(src: Path, spec: EventSpec) -> Layout:
    root = _root(src, lambda f: all((f / c).is_dir() for c in spec.classes), "CIFAR10DVS")
    if root is None:
        missing = [c for c in spec.classes if not (src / c).is_dir()]
        raise _error(src, spec, f"no class folder {missing[0]}/")
    train: list[Sample] = []
    val: list[Sample] = []
    for label, name in enumerate(spec.classes):
        recordings = sorted(_sorted_files(root / name, ".aedat"), key=lambda p: (_file_number(p), p.name))
        if not recordings:
            if _sorted_files(root / name, ".aedat4"):
                raise _error(src, spec, f"{name}/ holds .aedat4 files (tonic's re-release), which need the 'aedat' "
                                        "reader nas does not install; use the original .aedat files")
            raise _error(src, spec, f"{name}/ has no .aedat recordings")
        if len(recordings) < 2:
            raise _error(src, spec, f"{name}/ has 1 recording; a train/validation split needs 2 or more")
        cut = max(1, min(len(recordings) - 1, round(CIFAR10DVS_TRAIN_SHARE * len(recordings))))
        train += [Sample(path, label) for path in recordings[:cut]]
        val += [Sample(path, label) for path in recordings[cut:]]
    return Layout(train, val, files.read_aedat2_cifar10dvs)


_SCANS = {"nmnist": _scan_nmnist, "dvsgesture": _scan_gesture, "cifar10dvs": _scan_cifar10dvs}


def scan(name: str, src: Path) -> Layout:
    """The samples of event dataset ``name`` in folder ``src``, from the layout alone; NasError naming
    the files that were expected when the folder does not hold them."""
    return _SCANS[name](src, SPECS[name])


def _frames(layout: Layout, samples: list[Sample], spec: EventSpec, time_steps: int, progress: bool, what: str
            ) -> tuple[np.ndarray, np.ndarray, int, int]:
    from tqdm import tqdm

    frames = np.empty((len(samples), time_steps, 2, spec.size, spec.size), dtype=np.uint8)
    saturated = events_total = 0
    cached: tuple[Path, files.Events] | None = None  # segments of one recording follow each other
    for i, sample in enumerate(tqdm(samples, desc=what, unit="rec", disable=not progress, leave=False)):
        if cached is None or cached[0] != sample.path:
            cached = (sample.path, files.check_sensor(layout.read(sample.path), spec.sensor, sample.path, spec.name))
        events = cached[1]
        where = sample.path
        if sample.window is not None:
            start, end = sample.window
            keep = (events.t >= start) & (events.t < end)
            events = files.Events(*(a[keep] for a in events))
            where = Path(f"{sample.path} [{start}, {end}) us")
        frames[i], clipped = frames_by_count(events, time_steps, spec.sensor, spec.size, where)
        saturated += clipped
        events_total += len(events)
    return frames, np.array([s.label for s in samples], dtype=np.int64), saturated, events_total


def load(name: str, src: Path, time_steps: int, progress: bool = False) -> RawData:
    """Every sample of event dataset ``name`` as ``[N, T, 2, size, size]`` uint8 counts, checked.

    Reads and bins everything before returning, so a bad file stops a build before it writes.
    """
    spec = SPECS[name]
    layout = scan(name, src)
    train_x, train_y, sat_train, ev_train = _frames(layout, layout.train, spec, time_steps, progress, f"{name} train")
    val_x, val_y, sat_val, ev_val = _frames(layout, layout.val, spec, time_steps, progress, f"{name} val")
    binning = {"time_steps": time_steps, "binning": BINNING, "sensor": [spec.sensor, spec.sensor],
               "frame_size": [spec.size, spec.size], "events": ev_train + ev_val,
               "saturated_counts": sat_train + sat_val}
    return RawData(train_x, train_y, val_x, val_y, spec.classes, binning)
