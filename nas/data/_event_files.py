"""Readers of one event-camera recording in each dataset's own file format, checked.

Each returns :class:`Events` (x, y, polarity, time in µs; int64, in file order). Events are decoded
with tonic's readers where tonic 1.7.0 has a working one (N-MNIST ``.bin``, AEDAT 2.0 address and
timestamp pairs); its DVS Gesture AEDAT 3.1 reader fails on its own header tuple in 1.7.0, so those
packets are parsed here from the format (28-byte packet headers, 8-byte events), and so is the AEDAT
header (tonic's raises on files without one instead of saying so).

A file that is truncated, of another format, or whose events fall outside the sensor raises
``NasError`` naming the file: a recording of another dataset is caught by its format or its sensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from nas.errors import NasError

NMNIST_EVENT_BYTES = 5  # x, y, then polarity (bit 7) and a 23-bit timestamp
AEDAT_EVENT_BYTES = 8  # AEDAT 2.0: big-endian u32 address, u32 timestamp; AEDAT 3.1: u32 data, i32 timestamp
AEDAT3_PACKET_HEADER = np.dtype(
    [("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"), ("ts_overflow", "<i4"),
     ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")]
)
AEDAT3_POLARITY = 1  # packet type of polarity events


class Events(NamedTuple):
    """One recording: pixel column ``x``, row ``y``, polarity ``p`` (0 off, 1 on) and time ``t`` in µs."""

    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:  # NamedTuple's len would be 4
        return int(self.x.shape[0])


def _events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> Events:
    return Events(*(np.asarray(a, dtype=np.int64) for a in (x, y, p, t)))


def check_sensor(events: Events, side: int, path: Path, dataset: str) -> Events:
    """``events`` if every event lies on the ``side`` x ``side`` sensor with polarity 0/1; NasError otherwise."""
    if len(events):
        for name, values, limit in (("x", events.x, side), ("y", events.y, side), ("polarity", events.p, 2)):
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= limit:
                bad = low if low < 0 else high
                raise NasError(f"{path}: event {name}={bad} outside the {dataset} sensor ({side}x{side}, polarity "
                               f"0/1); a recording of another dataset?")
    return events


def read_nmnist(path: Path) -> Events:
    """An N-MNIST ``.bin`` recording (5 bytes per event; overflow markers, y = 240, dropped by tonic)."""
    from tonic.io import read_mnist_file

    size = path.stat().st_size
    if size % NMNIST_EVENT_BYTES:
        raise NasError(f"{path}: truncated N-MNIST recording ({size} bytes, not a multiple of "
                       f"{NMNIST_EVENT_BYTES} bytes per event)")
    layout = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
    try:
        raw = read_mnist_file(str(path), dtype=layout)
    except Exception as error:  # tonic's numpy decoding raises ValueError/IndexError on odd bytes
        raise NasError(f"{path}: not a readable N-MNIST recording ({type(error).__name__}: {error})") from None
    return _events(raw["x"], raw["y"], raw["p"], raw["t"])


def read_gesture_npy(path: Path) -> Events:
    """A DVS Gesture recording of tonic's preprocessed release: ``[N, 4]`` columns x, y, p, t (ms)."""
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises ValueError/EOFError/OSError on truncated or foreign files
        raise NasError(f"{path}: truncated or not a .npy array ({type(error).__name__}: {error})") from None
    if table.ndim != 2 or table.shape[1] != 4 or not np.issubdtype(table.dtype, np.number):
        raise NasError(f"{path}: expected a numeric [N, 4] array of x, y, p, t (ms), got {table.dtype} "
                       f"{list(table.shape)}")
    # Times are in ms in this release; µs like the other readers.
    return _events(table[:, 0], table[:, 1], table[:, 2], np.round(table[:, 3] * 1000))


def _aedat_header(path: Path, version: float) -> int:
    """Offset of the first event after an AEDAT header of ``version``; NasError for anything else.

    The header is the file's leading lines that start with ``#`` (AEDAT 3.1 closes it with
    ``#!END-HEADER``). jAER writes ``#!AER-DAT<version>`` first; a header of comment lines alone is
    taken as AEDAT 2.0, as readers of the CIFAR10-DVS release do.
    """
    start = 0
    found: float | None = None
    with open(path, "rb") as handle:
        for line in iter(handle.readline, b""):
            if not line.startswith(b"#"):
                break
            start += len(line)
            if line.startswith(b"#!AER-DAT"):
                try:
                    found = float(line[len(b"#!AER-DAT") :].decode("ascii").strip())
                except (UnicodeDecodeError, ValueError):
                    raise NasError(f"{path}: unreadable AEDAT version line {line[:40]!r}") from None
            if line.startswith(b"#!END-HEADER"):
                break
    if start == 0:
        raise NasError(f"{path}: not an AEDAT file (no '#' header); expected AEDAT {version}")
    found = 2.0 if found is None else found
    if round(found, 1) != version:
        raise NasError(f"{path}: AEDAT {found} file, expected AEDAT {version}; a recording of another dataset?")
    return start


def read_aedat2_cifar10dvs(path: Path) -> Events:
    """A CIFAR10-DVS recording of the original release: AEDAT 2.0, big-endian (address, timestamp) pairs.

    Address bits: x = (a & 0xFE) >> 1, y = (a & 0x7F00) >> 8, polarity = a & 1. The image is turned
    upright the way SpikingJelly and the papers read it: x' = 127 - y, y' = 127 - x, p' = 1 - p.
    """
    from tonic.io import get_aer_events_from_file

    start = _aedat_header(path, 2.0)
    payload = path.stat().st_size - start
    if payload % AEDAT_EVENT_BYTES:
        raise NasError(f"{path}: truncated AEDAT 2.0 recording ({payload} bytes of events, not a multiple of "
                       f"{AEDAT_EVENT_BYTES})")
    raw = get_aer_events_from_file(str(path), 2.0, start)
    address = raw["address"].astype(np.int64)
    x = (address & 0xFE) >> 1
    y = (address & 0x7F00) >> 8
    p = address & 1
    return _events(127 - y, 127 - x, 1 - p, raw["timeStamp"])


def read_aedat3_polarity(path: Path) -> Events:
    """The polarity events of an AEDAT 3.1 file (DVS Gesture's original release).

    Packets: a 28-byte little-endian header (type, source, event size, timestamp offset, timestamp
    overflow, capacity, number, valid), then ``capacity`` events of ``size`` bytes. A polarity event is
    u32 data (x = bits 17-31, y = bits 2-16, polarity = bit 1) and an i32 timestamp in µs, extended by
    the packet's overflow count (bit 31 and up). Packets of other types are skipped.
    """
    start = _aedat_header(path, 3.1)
    blob = np.fromfile(path, dtype=np.uint8, offset=start)
    parts: list[np.ndarray] = []
    times: list[np.ndarray] = []
    at = 0
    header_bytes = AEDAT3_PACKET_HEADER.itemsize
    while at < blob.size:
        if blob.size - at < header_bytes:
            raise NasError(f"{path}: truncated AEDAT 3.1 recording (a packet header is cut at byte {start + at})")
        header = blob[at : at + header_bytes].view(AEDAT3_PACKET_HEADER)[0]
        size, capacity = int(header["size"]), int(header["capacity"])
        if size < 1 or capacity < 0:
            raise NasError(f"{path}: corrupt AEDAT 3.1 packet header at byte {start + at}")
        body = size * capacity
        at += header_bytes
        if blob.size - at < body:
            raise NasError(f"{path}: truncated AEDAT 3.1 recording (a packet of {capacity} events is cut at byte "
                           f"{start + blob.size})")
        if int(header["type"]) == AEDAT3_POLARITY:
            if size != AEDAT_EVENT_BYTES:
                raise NasError(f"{path}: polarity events of {size} bytes, expected {AEDAT_EVENT_BYTES}")
            events = blob[at : at + body].view(np.dtype([("data", "<u4"), ("t", "<i4")]))
            parts.append(events["data"].astype(np.int64))
            times.append(events["t"].astype(np.int64) | (int(header["ts_overflow"]) << 31))
        at += body
    data = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    t = np.concatenate(times) if times else np.zeros(0, dtype=np.int64)
    return _events((data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, (data >> 1) & 1, t)
