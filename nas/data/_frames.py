"""Event recordings -> T frames of event counts, binned by event count as the papers do.

SpikingResformer and Spikformer train on DVS data through SpikingJelly's ``split_by='number'``:
frame j of T holds events ``[j*k, (j+1)*k)`` of the recording in time order, with ``k = N // T``,
and the last frame also takes the ``N mod T`` left over. Every frame then holds the same share of
activity whatever the recording's pace (a slow and a fast gesture give comparable frames), which
binning by time would not. tonic's ``ToFrame(n_event_bins=T)`` drops the remainder instead; both give
the same frames when T divides N (the tests check it).

Positions are scaled from the sensor's grid to ``size`` (128 -> 64 sums each 2x2 block of pixels):
the papers resize 128x128 frames to 64x64, which is this up to a factor of 4 (area averaging) that
the stem's BatchNorm absorbs. Counts are stored as uint8; the few above 255 (hot pixels) saturate
and are counted in the build's sidecar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.data._event_files import Events
from nas.errors import NasError

MAX_COUNT = 255  # uint8 storage

BINNING = "event count (SpikingJelly split_by='number': N // T events a frame, the remainder in the last)"


def frames_by_count(events: Events, time_steps: int, sensor: int, size: int, path: Path) -> tuple[np.ndarray, int]:
    """``[T, 2, size, size]`` uint8 event counts of one recording, and how many counts saturated at 255.

    Events are taken in time order (a stable sort keeps file order among equal times). Channel 0 is
    polarity 0 (off), channel 1 polarity 1 (on). NasError naming ``path`` when the recording has fewer
    events than frames: T does not fit it.
    """
    count = len(events)
    if count < time_steps:
        raise NasError(f"{path}: {count} events cannot fill T={time_steps} frames binned by event count "
                       "(choose a smaller T)")
    order = np.argsort(events.t, kind="stable")
    per_frame = count // time_steps
    frame = np.minimum(np.arange(count) // per_frame, time_steps - 1)
    x = events.x[order] * size // sensor
    y = events.y[order] * size // sensor
    flat = ((frame * 2 + events.p[order]) * size + y) * size + x
    counts = np.bincount(flat, minlength=time_steps * 2 * size * size).reshape(time_steps, 2, size, size)
    saturated = int((counts > MAX_COUNT).sum())
    return np.minimum(counts, MAX_COUNT).astype(np.uint8), saturated
