"""Writers of small event recordings in each dataset's own on-disk format, and folders laid out as
the datasets ship, for the tests. Written from the formats' descriptions, independently of nas's
readers, so a test that reads them back checks the readers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

GESTURE_SENSOR = 128


def random_events(
    rng: np.random.Generator, count: int, sensor: int, duration_us: int = 300_000
) -> dict[str, np.ndarray]:
    """``count`` events on a ``sensor`` x ``sensor`` grid, time-sorted (µs)."""
    return {
        "x": rng.integers(0, sensor, count),
        "y": rng.integers(0, sensor, count),
        "p": rng.integers(0, 2, count),
        "t": np.sort(rng.integers(0, duration_us, count)),
    }


def write_nmnist_bin(path: Path, ev: dict[str, np.ndarray]) -> None:
    """N-MNIST: 5 bytes per event: x, y, then polarity in bit 7 and a 23-bit big-endian timestamp."""
    t = ev["t"].astype(np.int64)
    rows = np.zeros((t.shape[0], 5), dtype=np.uint8)
    rows[:, 0] = ev["x"]
    rows[:, 1] = ev["y"]
    rows[:, 2] = (ev["p"] << 7) | ((t >> 16) & 0x7F)
    rows[:, 3] = (t >> 8) & 0xFF
    rows[:, 4] = t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rows.tobytes())


def write_gesture_npy(path: Path, ev: dict[str, np.ndarray]) -> None:
    """tonic's DVS Gesture release: a float [N, 4] array of x, y, p, t in milliseconds."""
    table = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] / 1000.0], axis=1).astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table)


def write_aedat3(path: Path, ev: dict[str, np.ndarray], packets: int = 2) -> None:
    """AEDAT 3.1 (DVS Gesture's original release): header lines, then packets of a 28-byte header and
    8-byte polarity events (x bits 17+, y bits 2-16, polarity bit 1, valid bit 0; i32 µs timestamp).
    A special-event packet (type 0) sits between the polarity packets, as cameras write them."""
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-01-01\r\n#!END-HEADER\r\n"
    out = [header]
    chunks = np.array_split(np.arange(ev["t"].shape[0]), packets)
    for k, idx in enumerate(chunks):
        t = ev["t"][idx].astype(np.int64)
        overflow = int(t.max() >> 31) if t.size else 0
        data = (ev["x"][idx].astype(np.uint32) << 17) | (ev["y"][idx].astype(np.uint32) << 2)
        data |= (ev["p"][idx].astype(np.uint32) << 1) | 1
        body = np.zeros(idx.size, dtype=[("d", "<u4"), ("t", "<i4")])
        body["d"] = data
        body["t"] = (t & 0x7FFFFFFF).astype(np.int32)
        out.append(struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, idx.size, idx.size, idx.size))
        out.append(body.tobytes())
        if k == 0:
            out.append(struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 1, 1, 1) + struct.pack("<Ii", 0x40, 5))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(out))


def write_cifar10dvs_aedat(path: Path, ev: dict[str, np.ndarray]) -> None:
    """CIFAR10-DVS original release: AEDAT 2.0, big-endian (address, timestamp) u32 pairs with address
    x = (a & 0xFE) >> 1, y = (a & 0x7F00) >> 8, polarity = a & 1. ``ev`` holds the upright events
    (x' = 127 - y, y' = 127 - x, p' = 1 - p), so the raw address encodes the inverse."""
    raw_x, raw_y, raw_p = 127 - ev["y"], 127 - ev["x"], 1 - ev["p"]
    address = (raw_y.astype(np.uint32) << 8) | (raw_x.astype(np.uint32) << 1) | raw_p.astype(np.uint32)
    body = np.zeros(address.shape[0], dtype=[("a", ">u4"), ("t", ">u4")])
    body["a"] = address
    body["t"] = ev["t"]
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Data format is int32 address\r\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body.tobytes())


def make_nmnist(root: Path, per_digit: tuple[int, int] = (2, 1), events: int = 48, seed: int = 0) -> dict:
    """Train/<digit>/*.bin and Test/<digit>/*.bin; returns {(split, digit, index): events}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (("Train", per_digit[0]), ("Test", per_digit[1])):
        for digit in range(10):
            for i in range(count):
                ev = random_events(rng, events + int(rng.integers(0, 7)), 34)
                write_nmnist_bin(root / split / str(digit) / f"{i:05d}.bin", ev)
                written[(split, digit, i)] = ev
    return written


def make_gesture_npy(root: Path, users: tuple[int, int] = (1, 1), events: int = 64, seed: int = 1) -> dict:
    """ibmGestureTrain/ and ibmGestureTest/ of userNN_<light>/<label>.npy; returns {path: (label, events)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (("ibmGestureTrain", users[0]), ("ibmGestureTest", users[1])):
        for user in range(count):
            for label in range(11):
                ev = random_events(rng, events, GESTURE_SENSOR)
                ev["t"] = ev["t"] // 1000 * 1000  # the release keeps whole milliseconds
                path = root / split / f"user{user + 1:02d}_led" / f"{label}.npy"
                write_gesture_npy(path, ev)
                written[path] = (label, ev)
    return written


def make_gesture_aedat(root: Path, events_per_gesture: int = 40, seed: int = 2) -> dict:
    """DvsGesture/: two recordings (one train, one test) of all 11 gestures in turn, with labels and lists.

    Returns {(file, label): events of that gesture}."""
    rng = np.random.default_rng(seed)
    folder = root / "DvsGesture"
    written = {}
    # The test recording starts past 2^31 µs, so its timestamps need the packets' overflow counter.
    recordings = (("user01_fluorescent", "trials_to_train.txt", 0), ("user24_led", "trials_to_test.txt", 2**31 + 5))
    for name, listing, offset in recordings:
        parts, rows = [], ["class,startTime_usec,endTime_usec"]
        for label in range(11):
            start = offset + 1_000_000 + label * 2_000_000
            ev = random_events(rng, events_per_gesture, GESTURE_SENSOR, 1_000_000)
            ev["t"] = ev["t"] + start
            parts.append(ev)
            rows.append(f"{label + 1},{start},{start + 1_000_000}")
            written[(name, label)] = ev
        # Events between gestures belong to no sample.
        gap = random_events(rng, 10, GESTURE_SENSOR, 500_000)
        gap["t"] = gap["t"] + offset + 23_000_000
        parts.append(gap)
        merged = {k: np.concatenate([p[k] for p in parts]) for k in ("x", "y", "p", "t")}
        write_aedat3(folder / f"{name}.aedat", merged, packets=3)
        (folder / f"{name}_labels.csv").write_text("\n".join(rows) + "\n")
        (folder / listing).write_text(f"{name}.aedat\n")
    return written


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_cifar10dvs(root: Path, per_class: int = 3, events: int = 64, seed: int = 3) -> dict:
    """<class>/cifar10_<class>_<i>.aedat for the ten classes; returns {path: (label, events)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for label, name in enumerate(CIFAR10_CLASSES):
        for i in range(per_class):
            ev = random_events(rng, events, GESTURE_SENSOR)
            path = root / name / f"cifar10_{name}_{i}.aedat"
            write_cifar10dvs_aedat(path, ev)
            written[path] = (label, ev)
    return written


def reference_frames(ev: dict[str, np.ndarray], steps: int, sensor: int, size: int) -> np.ndarray:
    """Frames by event count, the slow obvious way: event i of N (time order) goes to frame
    min(i // (N // T), T - 1), pixel (y * size // sensor, x * size // sensor), channel p."""
    order = np.argsort(ev["t"], kind="stable")
    per_frame = len(order) // steps
    frames = np.zeros((steps, 2, size, size), dtype=np.int64)
    for i, k in enumerate(order):
        frame = min(i // per_frame, steps - 1)
        frames[frame, ev["p"][k], ev["y"][k] * size // sensor, ev["x"][k] * size // sensor] += 1
    return frames
