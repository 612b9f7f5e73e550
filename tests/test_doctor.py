"""nas doctor: the table, the verdict, the probes, and one real local Ray start."""

from __future__ import annotations

from importlib import metadata

import pytest

from nas import doctor
from nas.cli import main


def test_doctor_without_ray_reports_everything_present(capsys: pytest.CaptureFixture[str]) -> None:
    report = doctor.check_machine(start_ray=False)
    found = {check.name: check for check in report.checks}
    for dist in doctor.REQUIRED_PACKAGES:
        assert found[dist].ok is True and found[dist].value == metadata.version(dist)
    assert found["ffcv extension"].ok is True and found["ffcv extension"].value.startswith("loads (_libffcv")
    assert found["local Ray"].value == "skipped (--no-ray)" and found["local Ray"].ok is None
    assert found["CUDA"].value.startswith(("yes", "no"))
    assert "usable" in found["CPUs"].value
    assert report.ok and not report.failures

    assert main(["doctor", "--no-ray"]) == 0
    text = capsys.readouterr().out
    for name in (*doctor.REQUIRED_PACKAGES, "CPUs", "CUDA", "ffcv extension", "local Ray"):
        assert name in text
    assert text.rstrip().splitlines()[-1] == "verdict: ready for nas"


def test_failed_required_check_makes_the_verdict_negative() -> None:
    report = doctor.DoctorReport(
        [
            doctor.Check("torch", "2.13.0", True),
            doctor.Check("ffcv extension", "does not load: libturbojpeg.so.0: cannot open", False),
            doctor.Check("mlxtend", "missing", False, required=False),
        ]
    )
    assert not report.ok and [c.name for c in report.failures] == ["ffcv extension"]
    text = doctor.render_report(report)
    assert "FAIL" in text and "warn" in text
    assert text.splitlines()[-1] == "verdict: NOT ready for nas: ffcv extension"
    assert doctor.verdict(doctor.DoctorReport([doctor.Check("mlxtend", "missing", False, required=False)])) == (
        "verdict: ready for nas (1 optional item(s) missing)"
    )


def test_probe_reports_failures_and_timeouts() -> None:
    ok, line, _ = doctor._probe("print('fine')", 60)
    assert ok and line == "fine"
    ok, line, _ = doctor._probe("import sys; sys.exit('broken install')", 60)
    assert not ok and line == "broken install"
    ok, line, _ = doctor._probe("import time; time.sleep(30)", 0.5)
    assert not ok and line == "no answer within 0 s"


def test_doctor_starts_and_stops_a_local_ray() -> None:
    report = doctor.check_machine(start_ray=True)
    ray_check = next(c for c in report.checks if c.name == "local Ray")
    assert ray_check.ok is True, ray_check.value
    assert ray_check.value.startswith("started and stopped in")


def test_an_unwritable_data_folder_makes_the_verdict_negative(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NAS_DATA_DIR", str(blocker / "data"))
    check = next(c for c in doctor.check_machine(start_ray=False).checks if c.name == "data folder")
    assert check.ok is False and "is a file, not a folder" in check.value
    assert main(["doctor", "--no-ray"]) == 1
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "verdict: NOT ready for nas: data folder"
    assert not (blocker / "data").exists()
