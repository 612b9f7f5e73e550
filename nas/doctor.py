"""``nas doctor``: what this machine has for nas, in one table with a verdict.

Starting a local Ray runs in a child process with a time limit, so a broken install can neither
crash nor hang the doctor; FFCV's compiled extension is loaded with ctypes, without importing ffcv.
"""

from __future__ import annotations

import ctypes
import importlib.util
import io
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# Distributions nas cannot work without, in the order the table shows them.
REQUIRED_PACKAGES = ("torch", "spikingjelly", "ray", "optuna", "mlflow", "ffcv")
# Shown for information; a missing one is a warning, not a failure.
OPTIONAL_PACKAGES = ("numba", "numpy", "mlxtend", "scikit-learn")

RAY_TIMEOUT_S = 120.0

_RAY_PROBE = """
import ray
ray.init(address="local", num_cpus=1, num_gpus=0, object_store_memory=100 * 1024 * 1024,
         include_dashboard=False, log_to_driver=False, logging_level="ERROR")
print(ray.cluster_resources().get("CPU", 0))
ray.shutdown()
"""


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table. ``ok`` is None for information that cannot fail."""

    name: str
    value: str
    ok: bool | None
    required: bool = True


@dataclass
class DoctorReport:
    """All checks and the verdict: ``ok`` is true when every required check passed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no required check failed."""
        return all(c.ok is not False for c in self.checks if c.required)

    @property
    def failures(self) -> list[Check]:
        """The required checks that failed."""
        return [c for c in self.checks if c.required and c.ok is False]

    @property
    def warnings(self) -> list[Check]:
        """The optional checks that failed."""
        return [c for c in self.checks if not c.required and c.ok is False]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def _probe(code: str, timeout: float) -> tuple[bool, str, float]:
    """Run ``code`` in a fresh interpreter; (succeeded, last line of output, seconds)."""
    start = time.perf_counter()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the probe must start its own Ray, never join someone's cluster
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # and listen on loopback only, as a local search does
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return False, _last_line(done.stderr or done.stdout), seconds
    return True, _last_line(done.stdout), seconds


def _ffcv_extension() -> tuple[bool, str]:
    """Load FFCV's compiled ``_libffcv`` the way ``ffcv.libffcv`` does (ctypes), without importing ffcv.

    Importing ffcv itself costs seconds (numba compiles at import time); loading the shared library
    is what fails when the system OpenCV or libturbojpeg is missing, and it says which one.
    """
    spec = importlib.util.find_spec("ffcv")
    if spec is None or not spec.submodule_search_locations:
        return False, "ffcv package not found"
    folder = Path(next(iter(spec.submodule_search_locations)))
    libraries = sorted(folder.glob("_libffcv*.so")) + sorted(folder.glob("_libffcv*.pyd"))
    if not libraries:
        return False, f"no compiled _libffcv in {folder} (build from source failed?)"
    try:
        ctypes.CDLL(str(libraries[0]))
    except OSError as error:
        return False, f"does not load: {error}"
    return True, f"loads ({libraries[0].name})"


def _cuda() -> Check:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("CUDA", f"yes: {names}", True, required=False)
    return Check("CUDA", "no (CPU only; fine for nas)", None, required=False)


def _data_folder() -> Check:
    """Whether the dataset cache (``$NAS_DATA_DIR`` or ``~/.cache/nas/data``) can be written, without creating it."""
    from nas._paths import write_problem
    from nas.data import default_data_dir

    folder = default_data_dir()
    problem = write_problem(folder)
    if problem is not None:
        return Check("data folder", f"{folder}: {problem}; set NAS_DATA_DIR", False)
    return Check("data folder", f"{folder} (writable)", True)


def check_machine(*, start_ray: bool = True) -> DoctorReport:
    """Run every check. ``start_ray=False`` skips starting a local Ray (the slowest check)."""
    report = DoctorReport()
    report.checks.append(Check("python", platform.python_version(), sys.version_info[:2] == (3, 11)))
    for dist in REQUIRED_PACKAGES:
        version = _version(dist)
        report.checks.append(Check(dist, version or "missing", version is not None))
    for dist in OPTIONAL_PACKAGES:
        version = _version(dist)
        report.checks.append(Check(dist, version or "missing", None if version else False, required=False))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    report.checks.append(Check("CPUs", f"{usable} usable of {os.cpu_count()}", None, required=False))
    try:
        report.checks.append(_cuda())
    except ImportError:
        report.checks.append(Check("CUDA", "unknown (torch missing)", None, required=False))

    if _version("ffcv") is None:
        report.checks.append(Check("ffcv extension", "not checked (ffcv missing)", False))
    else:
        ok, value = _ffcv_extension()
        report.checks.append(Check("ffcv extension", value, ok))

    report.checks.append(_data_folder())
    if not start_ray:
        report.checks.append(Check("local Ray", "skipped (--no-ray)", None))
    elif _version("ray") is None:
        report.checks.append(Check("local Ray", "not checked (ray missing)", False))
    else:
        ok, line, seconds = _probe(_RAY_PROBE, RAY_TIMEOUT_S)
        value = f"started and stopped in {seconds:.1f} s" if ok else f"failed: {line}"
        report.checks.append(Check("local Ray", value, ok))
    return report


def verdict(report: DoctorReport) -> str:
    """The one-line conclusion of a report."""
    if report.ok:
        note = f" ({len(report.warnings)} optional item(s) missing)" if report.warnings else ""
        return f"verdict: ready for nas{note}"
    names = ", ".join(c.name for c in report.failures)
    return f"verdict: NOT ready for nas: {names}"


def render_report(report: DoctorReport) -> str:
    """The doctor's table and verdict line as plain text."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    marks = {True: "ok", False: "FAIL", None: "-"}
    table = Table(title="nas doctor")
    table.add_column("check")
    table.add_column("found")
    table.add_column("status")
    for check in report.checks:
        status = marks[check.ok] if check.required or check.ok is not False else "warn"
        table.add_row(escape(check.name), escape(check.value), status)
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(table)
    return buffer.getvalue().rstrip() + "\n" + verdict(report)
