"""Bad input to every subcommand, as a new user would type it: one line, a non-zero exit, nothing changed.

Every case runs ``nas`` in this process against a run folder holding a real search (an Optuna study
and an MLflow experiment with one complete trial) and asserts that stderr is exactly one line that
starts with ``nas: error:`` and says what is wrong, that the exit status is not zero, and that no
file of the existing stores changed and no file appeared (the search name's lock file aside).
Validation happens before anything expensive, so the whole matrix takes seconds per case at most.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from tiny_space import tiny_space

from nas.cli import main
from nas.results.layout import default_artifact_location, default_storage_url
from nas.search.options import SearchOptions
from nas.search.prepare import prepare_search
from nas.tracking import MlflowTracker

PARAMS = {"width": 8, "depth1": 1, "group": 2}
DISTRIBUTIONS = {
    "width": optuna.distributions.CategoricalDistribution([8, 12, 16]),
    "depth1": optuna.distributions.IntDistribution(1, 2),
    "group": optuna.distributions.CategoricalDistribution([2, 4]),
}


def _mount_tmpfs(folder: Path, options: str, request: pytest.FixtureRequest) -> bool:
    """A small tmpfs at ``folder`` (read-only or tiny, to stand for a read-only or full disk); needs root."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        return False
    # lazy: a file a failed case left open must not keep the mount (and pytest's tmp cleanup) busy
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(folder)], check=False))
    return True


def _make_base_search(folder: Path) -> Path:
    """A run folder with search ``base``: 1 trial budget, 1 complete trial, an MLflow parent and child."""
    space = folder / "tiny.py"
    space.write_text(tiny_space(epochs=1, trials=1, train=64))
    root = folder / "runs"
    prepared = prepare_search(SearchOptions(space=str(space), name="base", root=str(root), trials=1))
    try:
        tracker = MlflowTracker(prepared.tracking_uri, "base", objectives=prepared.objectives,
                                artifact_location=default_artifact_location(root, "base"))
        tracker.start_search(space_file=prepared.search_dir / "space.py", search_params={"trials": 1})
        # trial 0 has (stand-in) weights, trial 1 none
        for number, (params, values) in enumerate([(PARAMS, [0.5, 1.0]), ({**PARAMS, "width": 16}, [0.4, 2.0])]):
            metrics = {"epoch": 1, "val_acc": values[0], "energy_uj": values[1]}
            prepared.study.add_trial(optuna.trial.create_trial(
                params=params, distributions=DISTRIBUTIONS, values=values, user_attrs={"history": [metrics]}))
            tracker.trial_started(number, params, attrs={})
            tracker.trial_finished(number, "complete", final_metrics=metrics)
        tracker.finish_search("FINISHED")
        weights = prepared.search_dir / "trials" / "0" / "trainer.pt"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"stand-in")
    finally:
        prepared.release()
        storage = prepared.study._storage
        getattr(storage, "_backend", storage).engine.dispose()
    gc.collect()  # connections still open would delete the write-ahead log when collected later
    for db in ("optuna.db", "mlflow.db"):  # everything in the main files, so that a read changes nothing
        with sqlite3.connect(root / db) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` that holds state.

    Left out: lock files (empty, or a process id), SQLite's shared-memory index and an empty
    write-ahead log (SQLite creates and deletes both as connections open and close).
    """
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", "-shm"))
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("matrix")
    root = _make_base_search(folder)
    values = {"root": str(root), "space": str(folder / "tiny.py"), "base": str(folder)}
    import torch

    # on a machine with GPUs, one per trial is fine: the case then expects the refusal of 64
    values["no_gpu"] = ("this machine has no GPU, so no trial could ever start" if not torch.cuda.is_available()
                        else "")

    a_file = folder / "a-file"
    a_file.write_text("not a folder\n")
    binary = folder / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    # a text file whose first byte is a pickle opcode that fails without an UnpicklingError ('r')
    passwd = folder / "passwd.txt"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    values |= {"file": str(a_file), "binary": str(binary), "passwd": str(passwd)}

    zero_root = folder / "zero"  # a search whose study file is empty (zero bytes)
    (zero_root / "z").mkdir(parents=True)
    (zero_root / "optuna.db").write_bytes(b"")
    (zero_root / "z" / "search.json").write_text(
        json.dumps({"name": "z", "storage": default_storage_url(zero_root)}))
    foreign_root = folder / "foreign"  # a search whose study file is some other SQLite database
    (foreign_root / "f").mkdir(parents=True)
    with sqlite3.connect(foreign_root / "optuna.db") as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    (foreign_root / "f" / "search.json").write_text(
        json.dumps({"name": "f", "storage": default_storage_url(foreign_root)}))
    values |= {"zero_root": str(zero_root), "foreign_root": str(foreign_root)}

    spaces = {
        "syntax": "from nas import SearchSpace\nspace = SearchSpace(\n",
        "nospace": "x = 1\n",
        "latency": tiny_space(epochs=1).replace('name="tiny",', 'name="tiny", objectives={"latency_ms": "min"},'),
        "raising": "raise RuntimeError('the author left a bug here')\n",
    }
    for name, text in spaces.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
        values[name] = str(folder / f"{name}.py")

    mounts = []
    readonly, full = folder / "readonly", folder / "full"
    if _mount_tmpfs(readonly, "ro,size=1m", request):
        mounts.append(readonly)
    if _mount_tmpfs(full, "size=256k", request):
        mounts.append(full)
        try:
            with open(full / "filler", "wb", buffering=0) as handle:
                while True:
                    handle.write(b"\0" * 4096)
        except OSError:
            pass  # full
    values |= {"readonly": str(readonly) if readonly in mounts else "", "full": str(full) if full in mounts else ""}

    old_data_dir = os.environ.get("NAS_DATA_DIR")
    os.environ["NAS_DATA_DIR"] = str(folder / "data")
    yield values
    if old_data_dir is None:
        os.environ.pop("NAS_DATA_DIR", None)
    else:
        os.environ["NAS_DATA_DIR"] = old_data_dir


# (case id, argv with {placeholders} from ctx, what the one line must contain)
CASES = [
    # launch: names (one rule for launch and resume)
    ("launch-name-quote", ["launch", "{space}", "--root", "{root}", "--name", "a'b"], "is not a valid search name"),
    ("launch-name-newline", ["launch", "{space}", "--root", "{root}", "--name", "a\nb"], "is not a valid search name"),
    ("launch-name-300", ["launch", "{space}", "--root", "{root}", "--name", "n" * 300], "at most 100"),
    ("launch-name-empty", ["launch", "{space}", "--root", "{root}", "--name", ""], "is not a valid search name"),
    ("launch-name-path", ["launch", "{space}", "--root", "{root}", "--name", "../up"], "is not a valid search name"),
    ("launch-name-exists", ["launch", "{space}", "--root", "{root}", "--name", "base"], "already exists"),
    # launch: numbers
    ("launch-seed-huge", ["launch", "{space}", "--root", "{root}", "--seed", "99999999999999999999"], "--seed must be"),
    ("launch-seed-negative", ["launch", "{space}", "--root", "{root}", "--seed", "-1"], "--seed must be"),
    ("launch-trials-huge", ["launch", "{space}", "--root", "{root}", "--trials", "1000000000"], "pass --yes"),
    ("launch-epochs-huge", ["launch", "{space}", "--root", "{root}", "--epochs", "1000000"], "pass --yes"),
    ("launch-concurrency-huge", ["launch", "{space}", "--root", "{root}", "--concurrency", "1000"], "pass --yes"),
    ("launch-trials-zero", ["launch", "{space}", "--root", "{root}", "--trials", "0"], "--trials must be at least 1"),
    ("launch-epochs-negative", ["launch", "{space}", "--root", "{root}", "--epochs", "-2"], "--epochs must be"),
    ("launch-concurrency-zero", ["launch", "{space}", "--root", "{root}", "--concurrency", "0"], "at least 1"),
    ("launch-trials-text", ["launch", "{space}", "--root", "{root}", "--trials", "ten"], "invalid int value"),
    ("launch-budget-zero", ["launch", "{space}", "--root", "{root}", "--time-budget", "0"], "must be positive"),
    ("launch-budget-nan", ["launch", "{space}", "--root", "{root}", "--time-budget", "nan"], "finite number"),
    ("launch-cpus-inf", ["launch", "{space}", "--root", "{root}", "--cpus-per-trial", "inf"], "finite number"),
    ("launch-cpus-zero", ["launch", "{space}", "--root", "{root}", "--cpus-per-trial", "0"], "must be positive"),
    ("launch-cpus-too-many", ["launch", "{space}", "--root", "{root}", "--cpus-per-trial", "4096"],
     "so no trial could ever start"),
    ("launch-gpus-negative", ["launch", "{space}", "--root", "{root}", "--gpus-per-trial", "-1"], "must be >= 0"),
    ("launch-gpus-absent", ["launch", "{space}", "--root", "{root}", "--gpus-per-trial", "1"], "{no_gpu}"),
    ("launch-gpus-too-many", ["launch", "{space}", "--root", "{root}", "--gpus-per-trial", "64"],
     "--gpus-per-trial 64: this machine has"),
    ("launch-max-failures", ["launch", "{space}", "--root", "{root}", "--max-failures", "-1"], "must be >= 0"),
    ("launch-sampler", ["launch", "{space}", "--root", "{root}", "--sampler", "cmaes"], "invalid choice: 'cmaes'"),
    # launch: data
    ("launch-data-src-builtin", ["launch", "{space}", "--root", "{root}", "--data-src", "/tmp"],
     "is built in and takes no --src"),
    ("launch-dataset-unknown", ["launch", "{space}", "--root", "{root}", "--dataset", "imagenet22k"], "imagenet22k"),
    ("launch-data-src-missing", ["launch", "{space}", "--root", "{root}", "--dataset", "cifar10", "--data-src",
                                 "/nonexistent/cifar"], "not a folder"),
    # launch: the space file
    ("launch-space-missing", ["launch", "/nonexistent/space.py", "--root", "{root}"], "search-space file not found"),
    ("launch-space-binary", ["launch", "{binary}", "--root", "{root}"], "cannot read search-space file"),
    ("launch-space-syntax", ["launch", "{syntax}", "--root", "{root}"], "syntax error"),
    ("launch-space-none", ["launch", "{nospace}", "--root", "{root}"], "defines no SearchSpace"),
    ("launch-space-raises", ["launch", "{raising}", "--root", "{root}"], "RuntimeError: the author left a bug here"),
    ("launch-space-objective", ["launch", "{latency}", "--root", "{root}"], "'latency_ms' is never reported"),
    # launch: where things go
    ("launch-storage-not-url", ["launch", "{space}", "--root", "{root}", "--name", "x", "--storage", "notaurl"],
     "is not a SQLAlchemy URL"),
    ("launch-storage-down", ["launch", "{space}", "--root", "{root}", "--name", "x", "--storage",
                             "postgresql+psycopg2://nas:secret@127.0.0.1:1/nas"], "is unreachable"),
    ("launch-storage-folder", ["launch", "{space}", "--root", "{root}", "--name", "x", "--storage",
                               "sqlite:///{base}"], "is a folder, not a SQLite file"),
    ("launch-storage-not-sqlite", ["launch", "{space}", "--root", "{root}", "--name", "x", "--storage",
                                   "sqlite:///{binary}"], "corrupt or not a SQLite database"),
    ("launch-storage-foreign", ["launch", "{space}", "--root", "{root}", "--name", "x", "--storage",
                                "sqlite:///{foreign_root}/optuna.db"], "is not a nas study"),
    ("launch-address-down", ["launch", "{space}", "--root", "{root}", "--name", "x", "--address", "127.0.0.1:1"],
     "no Ray cluster answers there"),
    ("launch-address-bad", ["launch", "{space}", "--root", "{root}", "--name", "x", "--address", "nowhere"],
     "is not HOST:PORT"),
    ("launch-tracking-down", ["launch", "{space}", "--root", "{root}", "--name", "x", "--tracking-uri",
                              "http://127.0.0.1:1"], "does not answer"),
    ("launch-tracking-credentials", ["launch", "{space}", "--root", "{root}", "--name", "x", "--tracking-uri",
                                     "http://nas:secret@127.0.0.1:1"], "nas:***@127.0.0.1:1 does not answer"),
    ("launch-tracking-folder", ["launch", "{space}", "--root", "{root}", "--name", "x", "--tracking-uri",
                                "sqlite:////nonexistent/mlflow.db"], "folder /nonexistent does not exist"),
    ("launch-root-file", ["launch", "{space}", "--root", "{file}"], "is a file, not a run folder"),
    ("launch-storage-readonly", ["launch", "{space}", "--root", "{root}", "--name", "x", "--storage",
                                 "sqlite:///{readonly}/db/optuna.db"], "cannot create folder"),
    ("launch-root-below-file", ["launch", "{space}", "--root", "{file}/runs"], "a-file"),
    ("launch-root-readonly", ["launch", "{space}", "--root", "{readonly}/runs"], "cannot write there"),
    ("launch-root-full", ["launch", "{space}", "--root", "{full}/runs"], "{full}"),
    # resume
    ("resume-unknown", ["resume", "nope", "--root", "{root}"], "no such search"),
    ("resume-name-quote", ["resume", "a'b", "--root", "{root}"], "is not a valid search name"),
    ("resume-finished", ["resume", "base", "--root", "{root}"], "is already complete (2 of 1 trials)"),
    ("resume-budget", ["resume", "base", "--root", "{root}", "--time-budget", "-5"], "must be positive"),
    ("resume-root-file", ["resume", "base", "--root", "{file}"], "is a file, not a run folder"),
    # status, pareto, report: read-only
    ("status-root-file", ["status", "--root", "{file}"], "is a file, not a run folder"),
    ("status-unknown", ["status", "nope", "--root", "{root}"], "unknown search 'nope'; searches in"),
    ("status-storage-not-url", ["status", "base", "--root", "{root}", "--storage", "notaurl"],
     "is not a SQLAlchemy URL"),
    ("status-zero-byte-study", ["status", "--root", "{zero_root}"], "is an empty file, not a nas study"),
    ("status-foreign-study", ["status", "--root", "{foreign_root}"], "is not a nas study"),
    ("status-new-storage", ["status", "base", "--root", "{root}", "--storage", "sqlite:///{base}/new/optuna.db"],
     "does not exist"),
    ("status-storage-not-sqlite", ["status", "base", "--root", "{root}", "--storage", "sqlite:///{binary}"],
     "corrupt or not a SQLite database"),
    ("pareto-unknown", ["pareto", "nope", "--root", "{root}"], "unknown search 'nope'"),
    ("pareto-root-file", ["pareto", "base", "--root", "{file}"], "is a file, not a run folder"),
    ("pareto-zero-byte-study", ["pareto", "z", "--root", "{zero_root}"], "is an empty file, not a nas study"),
    ("report-zero-byte-study", ["report", "z", "--root", "{zero_root}"], "is an empty file, not a nas study"),
    ("pareto-foreign-study", ["pareto", "f", "--root", "{foreign_root}"], "is not a nas study"),
    ("report-unknown", ["report", "nope", "--root", "{root}"], "unknown search 'nope'"),
    ("report-out-file", ["report", "base", "--root", "{root}", "--out", "{file}"], "a-file"),
    ("report-out-readonly", ["report", "base", "--root", "{root}", "--out", "{readonly}/report"],
     "read-only file system"),
    ("report-out-full", ["report", "base", "--root", "{root}", "--out", "{full}"], "no space left on the device"),
    # export
    ("export-unknown", ["export", "nope", "--pareto", "--root", "{root}"], "unknown search 'nope'"),
    ("export-no-trial", ["export", "base", "--trial", "7", "--root", "{root}"], "has no trial 7"),
    ("export-no-weights", ["export", "base", "--trial", "1", "--root", "{root}", "--out", "{base}/exports"],
     "its weights are missing"),
    ("export-out-file", ["export", "base", "--trial", "0", "--root", "{root}", "--out", "{file}"],
     "exists and is not a folder"),
    ("export-format", ["export", "base", "--pareto", "--root", "{root}", "--format", "tflite"], "'tflite'"),
    ("export-out-readonly", ["export", "base", "--trial", "0", "--root", "{root}", "--out", "{readonly}/x"],
     "(Read-only file system); choose another folder"),
    ("export-retrain", ["export", "base", "--pareto", "--root", "{root}", "--retrain-epochs", "-1"],
     "--retrain-epochs must be"),
    ("export-none-chosen", ["export", "base", "--root", "{root}"], "one of the arguments --pareto --knee --trial"),
    # ui
    ("ui-port-zero", ["ui", "--root", "{root}", "--port", "0"], "--port must be in 1..65535"),
    ("ui-port-huge", ["ui", "--root", "{root}", "--port", "70000"], "--port must be in 1..65535"),
    ("ui-port-negative", ["ui", "--root", "{root}", "--port", "-1"], "--port must be in 1..65535"),
    ("ui-root-file", ["ui", "--root", "{file}"], "is a file, not a run folder"),
    ("ui-root-empty", ["ui", "--root", "{base}/nothing-here"], "no MLflow store here"),
    # dashboard
    ("dashboard-unknown", ["dashboard", "nope", "--root", "{root}"], "unknown search 'nope'"),
    ("dashboard-port-zero", ["dashboard", "base", "--root", "{root}", "--port", "0"], "--port must be in 1..65535"),
    ("dashboard-root-file", ["dashboard", "--root", "{file}"], "is a file, not a run folder"),
    ("dashboard-root-empty", ["dashboard", "--root", "{base}/nothing-here"], "no search in"),
    ("dashboard-storage-not-url", ["dashboard", "base", "--root", "{root}", "--storage", "notaurl"],
     "is not a SQLAlchemy URL"),
    # cluster
    ("cluster-root-file", ["cluster", "up", "--root", "{file}"], "is a file, not a run folder"),
    ("cluster-root-below-file", ["cluster", "up", "--root", "{file}/runs"], "choose another --root"),
    ("cluster-root-readonly", ["cluster", "up", "--root", "{readonly}/runs"], "choose another --root"),
    ("cluster-root-full", ["cluster", "up", "--root", "{full}/runs"], "choose another --root"),
    ("cluster-workers", ["cluster", "up", "--root", "{base}/cluster-root", "--workers", "-1"],
     "--workers must be between 0 and 250"),
    ("cluster-action", ["cluster", "restart", "--root", "{root}"], "invalid choice: 'restart'"),
    ("cluster-status-file", ["cluster", "status", "--root", "{file}"], "is a file, not a run folder"),
    ("cluster-down-file", ["cluster", "down", "--root", "{file}"], "is a file, not a run folder"),
    # data
    ("data-unknown", ["data", "build", "imagenet22k"], "imagenet22k"),
    ("data-src-builtin", ["data", "build", "mnist", "--src", "/tmp"], "is built in and takes no --src"),
    ("data-needs-src", ["data", "build", "cifar10"], "needs --src"),
    ("data-out-file", ["data", "build", "mnist", "--out", "{file}"], "cannot write there"),
    ("data-out-readonly", ["data", "build", "mnist", "--out", "{readonly}/data"], "cannot write there"),
    ("data-out-full", ["data", "build", "mnist", "--out", "{full}"], "MiB free"),
    ("data-info-missing", ["data", "info", "/nonexistent/x.beton"], "no such .beton file"),
    ("data-info-not-beton", ["data", "info", "{binary}"], "corrupt or truncated .beton"),
    ("data-info-text", ["data", "info", "{file}"], "corrupt or truncated .beton"),
    # energy
    ("energy-unknown", ["energy", "resnet50"], "unknown model 'resnet50'"),
    ("energy-img-huge", ["energy", "snnmlp_t", "--img-size", "100000"], "--img-size must be in 1..2048"),
    ("energy-img-zero", ["energy", "snnmlp_t", "--img-size", "0"], "--img-size must be in 1..2048"),
    ("energy-batch-zero", ["energy", "snnmlp_t", "--batch-size", "0"], "--batch-size must be in"),
    ("energy-steps-zero", ["energy", "snnmlp_t", "--time-steps", "0"], "--time-steps must be in"),
    ("energy-chans-zero", ["energy", "snnmlp_t", "--in-chans", "0"], "--in-chans must be in"),
    ("energy-classes-zero", ["energy", "snnmlp_t", "--num-classes", "0"], "--num-classes must be in"),
    ("energy-profile", ["energy", "snnmlp_t", "--profile", "3nm-dreams"], "3nm-dreams"),
    ("energy-checkpoint", ["energy", "snnmlp_t", "--checkpoint", "{binary}"], "not a readable state_dict"),
    ("energy-checkpoint-text", ["energy", "snnmlp_t", "--checkpoint", "{passwd}"], "not a readable state_dict"),
    # train
    ("train-epochs-zero", ["train", "{space}", "--params", json.dumps(PARAMS), "--epochs", "0"],
     "--epochs must be in 1..200, got 0"),
    ("train-epochs-negative", ["train", "{space}", "--params", json.dumps(PARAMS), "--epochs", "-1"],
     "--epochs must be in 1..200, got -1"),
    ("train-seed", ["train", "{space}", "--params", json.dumps(PARAMS), "--seed", "-3"], "--seed must be in"),
    ("train-unknown-key", ["train", "{space}", "--params", json.dumps({**PARAMS, "widht": 9})],
     "unknown key(s) 'widht'"),
    ("train-missing-key", ["train", "{space}", "--params", '{"width": 8}'], "'depth1' is missing"),
    ("train-out-of-range", ["train", "{space}", "--params", json.dumps({**PARAMS, "depth1": 5})], "out of the range"),
    ("train-binary-config", ["train", "{space}", "--trial-config", "{binary}"], "not a text file"),
    ("train-missing-config", ["train", "{space}", "--trial-config", "/nonexistent/arch.json"],
     "cannot read the trial config"),
    ("train-not-json", ["train", "{space}", "--params", "{width: 8}"], "not valid JSON"),
    ("train-space-missing", ["train", "/nonexistent/space.py", "--params", "{}"], "search-space file not found"),
    ("train-dataset-unknown", ["train", "{space}", "--params", json.dumps(PARAMS), "--dataset", "imagenet22k"],
     "imagenet22k"),
    # evaluate, bench
    ("evaluate-missing", ["evaluate", "/nonexistent/export"], "not an export folder"),
    ("evaluate-file", ["evaluate", "{file}"], "not an export folder"),
    ("evaluate-binary", ["evaluate", "{binary}"], "not an export folder"),
    ("bench-info-unknown", ["bench", "info", "no-such-table"], "no-such-table"),
    ("bench-run-unknown", ["bench", "run", "--table", "no-such-table"], "no-such-table"),
    ("bench-run-workers", ["bench", "run", "--table", "snnmlp", "--workers", "0"], "--workers must be at least 1"),
    ("bench-run-seeds", ["bench", "run", "--table", "snnmlp", "--seeds", "0"], "--seeds must be at least 1"),
    ("bench-run-fraction", ["bench", "run", "--table", "snnmlp", "--fraction", "2"], "--fraction must be in (0, 1]"),
    ("bench-run-budget", ["bench", "run", "--table", "snnmlp", "--budget", "-5"], "--budget must be positive"),
    ("bench-run-eta", ["bench", "run", "--table", "snnmlp", "--eta", "1"], "--eta must be greater than 1"),
    ("bench-build-count", ["bench", "build", "{space}", "--count", "0", "--out", "{base}/table.json.gz"],
     "--count must be at least 1"),
    ("bench-info-not-table", ["bench", "info", "{binary}"], "not a readable learning-curve table"),
    # no command at all
    ("no-command", [], "the following arguments are required: command"),
]


def _fill(text: str, ctx: dict[str, str]) -> str:
    for key, value in ctx.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize(("argv", "message"), [pytest.param(a, m, id=i) for i, a, m in CASES])
def test_bad_input_fails_in_one_line_and_changes_nothing(ctx: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                         argv: list[str], message: str) -> None:
    needed = {key for key in ("readonly", "full") if any("{" + key + "}" in part for part in argv)}
    if any(not ctx[key] for key in needed):
        pytest.skip(f"needs a {'/'.join(needed)} tmpfs (mount needs root)")
    if message == "{no_gpu}" and not ctx["no_gpu"]:
        pytest.skip("this machine has a GPU")
    args = [_fill(part, ctx) for part in argv]
    base = Path(ctx["base"])
    before = _snapshot(base)
    try:
        status = main(args)
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status not in (0, None), err
    assert len(lines) == 1, err
    assert lines[0].startswith("nas: error: "), lines[0]
    assert _fill(message, ctx) in lines[0], lines[0]
    assert "secret" not in lines[0] and "Traceback" not in err
    assert _snapshot(base) == before, "a bad input changed or added a file"


def test_the_matrix_covers_every_subcommand() -> None:
    from nas.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    tried = {argv[0] for _, argv, _ in CASES if argv}
    assert commands - {"doctor"} <= tried  # doctor has its own case in test_doctor.py


def test_verbose_adds_the_traceback_above_the_same_line(ctx: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "base", "--root", ctx["root"], "--out", ctx["file"]]
    assert main(argv) == 2
    quiet = capsys.readouterr().err.strip().splitlines()
    assert main([*argv, "--verbose"]) == 2
    loud = capsys.readouterr().err.strip().splitlines()
    assert loud[0].startswith("Traceback") and loud[-1] == quiet[0] and len(loud) > 3


def test_a_disk_that_fills_during_data_build_fails_promptly_and_keeps_nothing(
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from nas.data import _store
    from nas.errors import NasError

    folder = tmp_path / "small"
    if not _mount_tmpfs(folder, "size=3m", request):
        pytest.skip("needs a small tmpfs (mount needs root)")
    # The check of free space would refuse this build up front; without it the disk fills mid-write,
    # where FFCV's writer used to wait forever for its dead worker processes.
    monkeypatch.setattr(_store, "_check_free_space", lambda folder, splits: None)
    started = time.monotonic()
    with pytest.raises(NasError, match="writing failed"):
        _store.build("mnist", out=folder)
    assert time.monotonic() - started < 120
    assert sorted(p.name for p in folder.iterdir()) == [".mnist.lock"], "a partial file was kept"


def test_prepare_calls_when_checked_before_the_reference_and_before_create_under_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The launcher starts its MLflow writer in when_checked so that its imports overlap the energy
    # reference; only before_create, under the name's lock, may let anything write.
    import nas.search.prepare as prepare
    from nas.errors import NasError

    space = tmp_path / "tiny.py"
    space.write_text(tiny_space(epochs=1, trials=1, train=64))
    root = tmp_path / "runs"
    calls: list[str] = []
    real_reference = prepare._space_reference

    def reference(*args: object) -> dict[str, float]:
        calls.append("reference")
        return real_reference(*args)

    def when_checked(name: str, tracking_uri: str, _space: object) -> None:
        calls.append("when_checked")
        assert not (root / name).exists() and not (root / "optuna.db").exists(), "written before the checks ended"

    def before_create(name: str, tracking_uri: str, _space: object) -> None:
        calls.append("before_create")
        assert prepare.runs.SearchLock(root, name).path.is_file(), "before_create runs under the name's lock"

    monkeypatch.setattr(prepare, "_space_reference", reference)
    prepared = prepare_search(SearchOptions(space=str(space), name="order", root=str(root), trials=1),
                              before_create=before_create, when_checked=when_checked)
    prepared.release()
    assert calls == ["when_checked", "reference", "before_create"]

    # Bad options fail before when_checked: no writer is ever started for them.
    calls.clear()
    with pytest.raises(NasError, match="already exists"):
        prepare_search(SearchOptions(space=str(space), name="order", root=str(root), trials=1),
                       before_create=before_create, when_checked=when_checked)
    assert calls == []
