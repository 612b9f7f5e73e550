"""FFCV .beton files: cached, atomic builds; validation; descriptions for ``nas data info``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import json
import multiprocessing
import multiprocessing.queues
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.data._registry import DataInfo, Splits, canonical_name, load_splits, resolve_src, src_hash
from nas.errors import NasError

FORMAT_VERSION = 1  # bump when the stored fields or the sidecar change: old caches are then rebuilt
_PROBE_BYTES = 1 << 16  # bytes hashed at each end of a .beton to tell it apart from another file of the same size
_WRITER_LOCK = threading.Lock()


@dataclass(frozen=True)
class BuildResult:
    """The outcome of :func:`build`: where the files are, what they hold, and whether they were cached."""

    train_path: Path
    val_path: Path
    sidecar_path: Path
    info: DataInfo
    cached: bool


def default_data_dir() -> Path:
    """``$NAS_DATA_DIR`` if set, else ``~/.cache/nas/data``."""
    env = os.environ.get("NAS_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nas" / "data"


def sample_field(info: DataInfo) -> str:
    """Name of the sample field: ``image`` for images, ``frames`` for event data."""
    return "frames" if info.time_steps else "image"


def expected_fields(info: DataInfo) -> dict[str, dict[str, Any]]:
    """The fields every nas .beton holds: the raw uint8 sample (bit-exact) and an int label.

    Images are ``image`` ``[H, W, C]``; event data are ``frames`` ``[T, 2, H, W]`` of event counts.
    """
    if info.time_steps:
        shape = [info.time_steps, info.in_chans, info.img_size, info.img_size]
    else:
        shape = [info.img_size, info.img_size, info.in_chans]
    return {sample_field(info): {"type": "ndarray", "dtype": "uint8", "shape": shape}, "label": {"type": "int"}}


def _stem(name: str, src: Path | None) -> str:
    digest = src_hash(src)
    return f"{name}-{digest}" if digest else name


def _prepare_out(out: str | os.PathLike[str] | None) -> Path:
    folder = Path(out).expanduser() if out is not None else default_data_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root even where writing fails (read-only mounts): try for real.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nas-write-test-"):
            pass
    except OSError as error:
        raise NasError(f"--out {folder}: cannot write there ({error.strerror or error})") from None
    return folder


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Several Ray workers may ask for the same dataset at once: one builds, the others wait and
    # then find the cache.
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _probe(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_PROBE_BYTES))
        handle.seek(max(0, size - _PROBE_BYTES))
        digest.update(handle.read(_PROBE_BYTES))
    return digest.hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _cached_info(sidecar: Path, name: str, digest: str, folder: Path) -> DataInfo | None:
    """The DataInfo recorded by a complete earlier build, or None if anything does not check out."""
    data = _read_sidecar(sidecar)
    if data is None or data.get("format") != FORMAT_VERSION or data.get("dataset") != name:
        return None
    if data.get("src_hash", "") != digest:
        return None
    try:
        info = DataInfo.from_dict(data["info"])
        for split in ("train", "val"):
            entry = data["splits"][split]
            path = folder / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"] or _probe(path) != entry["probe"]:
                return None
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if data.get("fields") != expected_fields(info):
        return None
    return info


class _Samples:
    """Indexable (image, label) pairs for FFCV's writer."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


def _write_beton(
    path: Path, field: str, images: np.ndarray, labels: np.ndarray, label: str, progress: bool
) -> None:
    """Write one .beton to a hidden temp file next to ``path`` and move it into place at the end."""
    from tqdm import tqdm

    from nas.data._ffcv import IntField, NDArrayField, ffcv

    fields = {field: NDArrayField(np.dtype("uint8"), tuple(images.shape[1:])), "label": IntField()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    workers = _writer_workers(images)
    page = _page_size(images)
    writer = ffcv.writer.DatasetWriter(str(tmp), fields, page_size=page, num_workers=workers)
    # DatasetWriter always draws a tqdm bar; its module-level name is the only way to label it or
    # keep it quiet, so it is swapped for this call (under a lock) and restored; so are the names
    # through which it starts and waits for its workers (see _WriterWatch).
    with _WRITER_LOCK:
        originals = {name: getattr(ffcv.writer, name) for name in ("tqdm", "sleep", "Queue", "Process", "Value")}
        allocator_value = ffcv.memory_allocator.Value
        watch = _WriterWatch(originals["sleep"])
        ffcv.writer.tqdm = functools.partial(tqdm, desc=label, unit="img", disable=not progress, leave=True)
        ffcv.writer.sleep, ffcv.writer.Queue, ffcv.writer.Process = watch.sleep, watch.queue, watch.process
        ffcv.writer.Value = ffcv.memory_allocator.Value = watch.context.Value
        try:
            writer.from_indexed_dataset(_Samples(images, labels), chunksize=500)
            os.replace(tmp, path)
        except _WritersDied:
            _free_metadata(writer)
            raise NasError(f"{path}: writing failed, its writer processes died (a full disk? see the error above); "
                           "nothing was kept") from None
        except OSError as error:
            _free_metadata(writer)
            reason = "no space left on the device" if error.errno == errno.ENOSPC else error.strerror or str(error)
            raise NasError(f"{path}: writing failed ({reason}); nothing was kept") from error
        except BaseException:
            _free_metadata(writer)
            raise
        finally:
            for name, value in originals.items():
                setattr(ffcv.writer, name, value)
            ffcv.memory_allocator.Value = allocator_value
            tmp.unlink(missing_ok=True)


def _free_metadata(writer: Any) -> None:
    """Release the writer's shared-memory metadata block, which FFCV frees only after a success."""
    shared = getattr(writer, "metadata_sm", None)
    if shared is not None:
        with contextlib.suppress(OSError):
            shared.close()
            shared.unlink()


def _writer_workers(images: np.ndarray) -> int:
    return max(1, min(4, os.cpu_count() or 1, images.shape[0] // 2000 + 1))


def _page_size(images: np.ndarray) -> int:
    # The smallest page FFCV allows (2 MiB): each writer process leaves one part-filled page. A
    # sample must fit in one page, so long event sequences get the next power of two.
    return max(1 << 21, 1 << (int(images[0].nbytes) - 1).bit_length()) if images.shape[0] else 1 << 21


class _WriterWatch:
    """Watches FFCV's writer processes so that a dead one ends the write instead of hanging it.

    FFCV's ``DatasetWriter`` starts worker processes that take turns appending pages; a worker that
    dies (``OSError: [Errno 28] No space left on device``) leaves the others waiting for its turn
    and the writing process waiting for its sample count and its allocation table, forever. The
    watch hands FFCV its ``Process``, ``sleep`` and ``Queue``: it records the workers, and where the
    writer waits (its polling sleep, a blocking ``get``) it checks them, stops the rest and raises
    ``_WritersDied`` once one has exited with an error.

    Off the main thread (Ray Tune runs a trial's function in a thread) the workers are spawned, not
    forked: a fork from a thread of a process whose numba has started TBB kills the child at once.
    """

    def __init__(self, sleep: Any) -> None:
        self._sleep = sleep
        self._owner = os.getpid()
        on_main_thread = threading.current_thread() is threading.main_thread()
        self.context = multiprocessing.get_context("fork" if on_main_thread else "spawn")
        self.workers: list[multiprocessing.process.BaseProcess] = []

    def process(self, *args: Any, **kwargs: Any) -> multiprocessing.process.BaseProcess:
        worker = self.context.Process(*args, **kwargs)
        self.workers.append(worker)
        return worker

    def check(self) -> None:
        if os.getpid() != self._owner:
            return  # a worker blocking on its own queue is not the writer's business
        if any(w.exitcode not in (None, 0) for w in self.workers if w.pid is not None):
            for worker in self.workers:
                if worker.pid is not None and worker.exitcode is None:
                    worker.terminate()
                    worker.join(5)
            raise _WritersDied

    def sleep(self, seconds: float) -> None:
        self.check()
        self._sleep(seconds)

    def queue(self, maxsize: int = 0) -> multiprocessing.queues.Queue:
        return _WatchedQueue(self, maxsize)


class _WatchedQueue(multiprocessing.queues.Queue):
    """A queue whose blocking ``get`` checks the writer's workers while it waits."""

    def __init__(self, watch: _WriterWatch, maxsize: int = 0) -> None:
        super().__init__(maxsize, ctx=watch.context)
        self._watch = watch

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        watch = getattr(self, "_watch", None)
        if not block or timeout is not None or watch is None:
            return super().get(block, timeout)
        while True:
            try:
                return super().get(timeout=0.5)
            except queue.Empty:
                watch.check()


class _WritersDied(Exception):
    """FFCV's writer processes are gone before the file was complete."""


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _check_free_space(folder: Path, splits: Splits) -> None:
    """Refuse a build that cannot fit on the disk before writing any of it (FFCV's writer hangs on ENOSPC)."""
    needed = 1 << 20
    for images in (splits.train_x, splits.val_x):
        # each writer process leaves at most one part-filled page, and metadata is small per sample
        needed += int(images.nbytes) + 2 * _writer_workers(images) * _page_size(images) + 64 * images.shape[0]
    free = _free_bytes(folder)
    if free is not None and free < needed:
        raise NasError(f"--out {folder}: {free / 2**20:.1f} MiB free, the dataset needs about "
                       f"{needed / 2**20:.1f} MiB; free some space or choose another --out")


def _split_entry(path: Path, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    counts = np.bincount(labels, minlength=num_classes)
    return {
        "file": path.name,
        "count": int(labels.shape[0]),
        "bytes": path.stat().st_size,
        "probe": _probe(path),
        "sha256": _sha256(path),
        "label_counts": [int(c) for c in counts],
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build(
    name: str,
    *,
    src: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> BuildResult:
    """Write ``<stem>-train.beton``, ``<stem>-val.beton`` and the sidecar ``<stem>.json`` into ``out``.

    ``stem`` is the dataset name, plus ``-<8 hex>`` of the resolved ``src`` folder for src-based
    datasets. ``out`` defaults to :func:`default_data_dir`. Event datasets are read and binned into
    T frames (the name picks T: ``dvsgesture-t8``) before anything is written. A build whose sidecar (written last)
    matches the files is reused (``cached=True``); anything else is rebuilt. Each file is written
    to a hidden temp file and moved into place, so an interrupted build never leaves a file set
    that a later call would take as complete.
    """
    name = canonical_name(name)
    src_path = resolve_src(name, src)
    folder = _prepare_out(out)
    stem = _stem(name, src_path)
    digest = src_hash(src_path)
    train_path = folder / f"{stem}-train.beton"
    val_path = folder / f"{stem}-val.beton"
    sidecar = folder / f"{stem}.json"
    with _locked(folder / f".{stem}.lock"):
        info = _cached_info(sidecar, name, digest, folder)
        if info is not None:
            return BuildResult(train_path, val_path, sidecar, info, cached=True)
        # Invalidate first: from here until the new sidecar lands, nothing counts as complete.
        sidecar.unlink(missing_ok=True)
        for stale in folder.glob(f".{stem}-*.tmp"):  # leftovers of killed builds; we hold the lock
            stale.unlink(missing_ok=True)
        splits: Splits = load_splits(name, src_path, progress=progress)
        _check_free_space(folder, splits)
        info = splits.info
        field = sample_field(info)
        _write_beton(train_path, field, splits.train_x, splits.train_y, f"{stem} train", progress)
        _write_beton(val_path, field, splits.val_x, splits.val_y, f"{stem} val", progress)
        frames = {"frames": splits.frames} if splits.frames is not None else {}
        _write_json(
            sidecar,
            {
                **frames,
                "format": FORMAT_VERSION,
                "dataset": name,
                "src": str(src_path) if src_path else None,
                "src_hash": digest,
                "fields": expected_fields(info),
                "info": info.to_dict(),
                "splits": {
                    "train": _split_entry(train_path, splits.train_y, info.num_classes),
                    "val": _split_entry(val_path, splits.val_y, info.num_classes),
                },
            },
        )
    return BuildResult(train_path, val_path, sidecar, info, cached=False)


def render_build(result: BuildResult) -> str:
    """What ``nas data build`` prints: one line on a cache hit, the files and counts otherwise."""
    info = result.info
    if result.cached:
        return (
            f"{info.name}: cached, nothing to do ({info.train_count:,} train / {info.val_count:,} val "
            f"in {result.train_path.parent})"
        )
    what = "event recordings as frames" if info.time_steps else "images"
    return "\n".join(
        [
            f"{info.name}: wrote {info.train_count:,} train / {info.val_count:,} val {what}, "
            f"{info.shape_text()}, {info.num_classes} classes",
            f"  train {result.train_path}",
            f"  val   {result.val_path}",
        ]
    )


# ---------------------------------------------------------------- reading and checking
def open_reader(path: str | os.PathLike[str]) -> Any:
    """An ``ffcv.reader.Reader`` of ``path`` after checking the file is whole (NasError if not).

    FFCV reads samples through raw pointers without bounds checks, so a truncated file would read
    garbage or crash the process: every allocation must lie inside the file.
    """
    from nas.data._ffcv import HeaderType, NDArrayField, Reader

    file = Path(path)
    if not file.is_file():
        raise NasError(f"{file}: no such .beton file")
    size = file.stat().st_size
    if size < HeaderType.itemsize:
        raise NasError(f"{file}: corrupt or truncated .beton ({size} bytes, shorter than the header)")
    try:
        reader = Reader(str(file))
    except Exception as error:  # FFCV raises AssertionError, ValueError, KeyError, ... on bad headers
        raise NasError(f"{file}: corrupt or truncated .beton ({type(error).__name__}: {error})") from None
    if reader.metadata.shape[0] != reader.num_samples:
        raise NasError(
            f"{file}: corrupt or truncated .beton (metadata of {reader.metadata.shape[0]} samples, "
            f"header says {reader.num_samples})"
        )
    table = reader.alloc_table
    table_ptr = int(reader.header["alloc_table_ptr"])
    # The writer puts the allocation table last: it must fill the file's tail exactly.
    if table_ptr > size or size - table_ptr != table.size * table.dtype.itemsize:
        raise NasError(f"{file}: corrupt or truncated .beton (allocation table does not end the file)")
    if table.size and int((table["ptr"] + table["size"]).max()) > table_ptr:
        raise NasError(f"{file}: corrupt or truncated .beton (data beyond the data region)")
    order = np.argsort(table["ptr"])
    starts, sizes = table["ptr"][order], table["size"][order]
    for column, handler in zip(reader.metadata.dtype.names, reader.handlers.values(), strict=True):
        if isinstance(handler, NDArrayField):
            pointers = np.asarray(reader.metadata[column], dtype=np.uint64)
            at = np.minimum(np.searchsorted(starts, pointers), max(starts.size - 1, 0))
            if starts.size == 0 and pointers.size:
                raise NasError(f"{file}: corrupt .beton (samples but no data)")
            if pointers.size and not (
                np.all(starts[at] == pointers) and np.all(sizes[at] == int(handler.element_size))
            ):
                raise NasError(f"{file}: corrupt .beton (a sample points outside its data)")
    return reader


def _field_summary(reader: Any) -> dict[str, dict[str, Any]]:
    from nas.data._ffcv import FloatField, IntField, NDArrayField, RGBImageField

    summary: dict[str, dict[str, Any]] = {}
    for field_name, handler in reader.handlers.items():
        if isinstance(handler, NDArrayField):
            shape = [int(v) for v in handler.shape]
            summary[field_name] = {"type": "ndarray", "dtype": str(handler.dtype), "shape": shape}
        elif isinstance(handler, IntField):
            summary[field_name] = {"type": "int"}
        elif isinstance(handler, FloatField):
            summary[field_name] = {"type": "float"}
        elif isinstance(handler, RGBImageField):
            summary[field_name] = {"type": "rgb_image"}
        else:
            summary[field_name] = {"type": type(handler).__name__}
    return summary


def check_fields(path: str | os.PathLike[str], info: DataInfo, reader: Any | None = None) -> Any:
    """Open ``path`` and check its fields are those of dataset ``info``; returns the reader.

    Raises ``NasError`` naming the first field that differs (or, via :func:`open_reader`, a damaged file).
    """
    file = Path(path)
    reader = open_reader(file) if reader is None else reader
    found = _field_summary(reader)
    wanted = expected_fields(info)
    for field_name, spec in wanted.items():
        if found.get(field_name) != spec:
            raise NasError(f"{file}: field {field_name!r} is {found.get(field_name)}, dataset {info.name} needs {spec}")
    extra = sorted(set(found) - set(wanted))
    if extra:
        raise NasError(f"{file}: field {extra[0]!r} is not a field of dataset {info.name}")
    return reader


def labels_of(reader: Any) -> np.ndarray:
    """The int labels of every sample, read from the metadata (no decoding)."""
    names = list(reader.handlers)
    return np.asarray(reader.metadata[reader.metadata.dtype.names[names.index("label")]], dtype=np.int64)


def _sidecar_for(file: Path) -> tuple[dict[str, Any] | None, str | None]:
    for split in ("train", "val"):
        suffix = f"-{split}.beton"
        if file.name.endswith(suffix):
            data = _read_sidecar(file.with_name(file.name[: -len(suffix)] + ".json"))
            if data is not None and data.get("splits", {}).get(split, {}).get("file") == file.name:
                return data, split
    return None, None


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a .beton holds: fields, sample count, label counts, size; dataset and classes from its sidecar.

    Raises ``NasError`` for a missing, corrupt or truncated file, for a file whose fields do not
    match the dataset its sidecar names, and for one whose bytes differ from the SHA-256 its build
    recorded (a damaged pixel passes every structural check).
    """
    file = Path(path)
    reader = open_reader(file)
    sidecar, split = _sidecar_for(file)
    info: DataInfo | None = None
    if sidecar is not None:
        try:
            info = DataInfo.from_dict(sidecar["info"])
        except (KeyError, TypeError, ValueError):
            info = None
    if info is not None:
        check_fields(file, info, reader)
    fields = _field_summary(reader)
    result: dict[str, Any] = {
        "file": str(file),
        "bytes": file.stat().st_size,
        "count": int(reader.num_samples),
        "fields": fields,
        "dataset": info.name if info else None,
        "split": split,
        "classes": list(info.classes) if info else [],
        "img_size": info.img_size if info else None,
        "in_chans": info.in_chans if info else None,
        "time_steps": info.time_steps if info else None,
        "frames": sidecar.get("frames") if sidecar else None,
        "cache_valid": None,
    }
    if "label" in fields and fields["label"]["type"] == "int":
        labels = labels_of(reader)
        values, counts = np.unique(labels, return_counts=True)
        result["label_counts"] = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    if sidecar is not None and split is not None:
        entry = sidecar["splits"][split]
        same_size = entry.get("bytes") == result["bytes"]
        if same_size and entry.get("sha256") not in (None, _sha256(file)):
            raise NasError(f"{file}: corrupt .beton (content differs from the checksum its build recorded)")
        result["cache_valid"] = same_size and entry.get("probe") == _probe(file)
    return result


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def render_info(description: dict[str, Any]) -> str:
    """A plain-text table of :func:`describe`'s result, for the terminal."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(description["file"]), show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if description["dataset"]:
        split = f" ({description['split']})" if description["split"] else ""
        table.add_row("dataset", f"{description['dataset']}{split}")
    table.add_row("samples", f"{description['count']:,}")
    table.add_row("size", _human_bytes(description["bytes"]))
    for field_name, spec in description["fields"].items():
        detail = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "type")
        table.add_row(f"field {field_name}", escape(spec["type"] + (f" ({detail})" if detail else "")))
    classes = description["classes"]
    if classes:
        shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
        table.add_row("classes", escape(shown))
    frames = description.get("frames")
    if frames:
        table.add_row("frames", escape(f"T={frames['time_steps']} binned by {frames['binning']}; "
                                       f"{frames['saturated_counts']} counts saturated at 255"))
    counts = description.get("label_counts")
    if counts:
        table.add_row("label counts", " ".join(f"{k}:{v}" for k, v in counts.items()))
    if description["cache_valid"] is False:
        table.add_row("sidecar", "does not match this file (a build will rewrite it)")
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(table)
    return buffer.getvalue().rstrip()
