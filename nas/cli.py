"""The ``nas`` command: argument parsing and printing only.

Every handler calls one function of a room (``nas.data``, ``nas.energy``, ``nas.search``, ...) and
prints what it returns, so everything the CLI does is reachable through the Python API.
A ``NasError`` becomes one line on stderr and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nas.errors import NasError


# ---------------------------------------------------------------- doctor (issue 2)
def _doctor(args: argparse.Namespace) -> int:
    from nas.doctor import check_machine, render_report

    report = check_machine(start_ray=not args.no_ray)
    print(render_report(report))
    return 0 if report.ok else 1


# ---------------------------------------------------------------- data (issue 2)
def _data_build(args: argparse.Namespace) -> int:
    raise NasError("nas data build: not available yet")


def _data_info(args: argparse.Namespace) -> int:
    raise NasError("nas data info: not available yet")


# ---------------------------------------------------------------- energy (issue 4)
def _energy(args: argparse.Namespace) -> int:
    raise NasError("nas energy: not available yet")


# ---------------------------------------------------------------- search (issue 6)
def _launch(args: argparse.Namespace) -> int:
    raise NasError("nas launch: not available yet")


def _resume(args: argparse.Namespace) -> int:
    raise NasError("nas resume: not available yet")


def _status(args: argparse.Namespace) -> int:
    raise NasError("nas status: not available yet")


def _pareto(args: argparse.Namespace) -> int:
    raise NasError("nas pareto: not available yet")


# ---------------------------------------------------------------- tracking views (issue 7)
def _report(args: argparse.Namespace) -> int:
    raise NasError("nas report: not available yet")


def _ui(args: argparse.Namespace) -> int:
    raise NasError("nas ui: not available yet")


# ---------------------------------------------------------------- export (issue 8)
def _export(args: argparse.Namespace) -> int:
    raise NasError("nas export: not available yet")


def _evaluate(args: argparse.Namespace) -> int:
    raise NasError("nas evaluate: not available yet")


# ---------------------------------------------------------------- cluster (issue 9)
def _cluster(args: argparse.Namespace) -> int:
    raise NasError("nas cluster: not available yet")


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: the space's)")
    p.add_argument("--epochs", type=int, default=None, help="max fidelity in epochs (default: the space's)")
    p.add_argument("--concurrency", type=int, default=None, help="trials running at once")
    p.add_argument("--name", default=None, help="search name (default: space name + timestamp)")
    p.add_argument("--sampler", choices=["tpe", "nsga2", "gp", "random"], default="tpe")
    p.add_argument("--scheduler", choices=["moasha", "asha", "none"], default="moasha")
    p.add_argument("--dataset", default=None, help="dataset name (default: the space's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="nas-runs", help="run folder (default ./nas-runs)")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the study storage")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite in the run folder)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (auto or HOST:PORT)")
    p.add_argument("--storage-path", default=None, help="trial files on a path every node can reach")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--cpus-per-trial", type=float, default=None)
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop launching trials after it")
    p.add_argument("--max-failures", type=int, default=1, help="Ray retries of a crashing trial")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs")


def build_parser() -> argparse.ArgumentParser:
    """The full ``nas`` argument parser."""
    parser = argparse.ArgumentParser(prog="nas", description="Architecture search for spiking neural networks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check what this machine has for nas")
    p.add_argument("--no-ray", action="store_true", help="skip starting a local Ray")
    p.set_defaults(handler=_doctor)

    data_parser = sub.add_parser("data", help="datasets as FFCV .beton files")
    data = data_parser.add_subparsers(dest="data_command", required=True)
    p = data.add_parser("build", help="write train/validation .beton files (cached)")
    p.add_argument("name")
    p.add_argument("--src", default=None, help="source folder (cifar10, cifar100, imagefolder)")
    p.add_argument("--out", default=None, help="output folder or file prefix")
    p.set_defaults(handler=_data_build)
    p = data.add_parser("info", help="describe a .beton file")
    p.add_argument("file")
    p.set_defaults(handler=_data_info)

    p = sub.add_parser("energy", help="per-layer energy table of a registered model")
    p.add_argument("model")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--time-steps", type=int, default=None)
    p.add_argument("--profile", default="45nm", help="profile name or a TOML/YAML profile file")
    p.add_argument("--checkpoint", default=None, help="trained weights (state_dict)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-chans", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_energy)

    p = sub.add_parser("launch", help="run a search")
    p.add_argument("space", help="search-space file")
    p.add_argument("--resume", action="store_true", help="continue the search of the same --name")
    _add_search_options(p)
    p.set_defaults(handler=_launch)

    p = sub.add_parser("resume", help="continue a stopped search")
    p.add_argument("name")
    p.add_argument("--root", default="nas-runs")
    p.add_argument("--address", default=None)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(handler=_resume)

    p = sub.add_parser("status", help="searches in the run folder")
    p.add_argument("name", nargs="?")
    p.add_argument("--root", default="nas-runs")
    p.set_defaults(handler=_status)

    p = sub.add_parser("pareto", help="the Pareto front of a search")
    p.add_argument("name")
    p.add_argument("--root", default="nas-runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_pareto)

    p = sub.add_parser("report", help="self-contained HTML report of a search")
    p.add_argument("name")
    p.add_argument("--root", default="nas-runs")
    p.add_argument("--out", default=None)
    p.set_defaults(handler=_report)

    p = sub.add_parser("ui", help="MLflow UI for the run folder on 127.0.0.1")
    p.add_argument("--root", default="nas-runs")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(handler=_ui)

    p = sub.add_parser("export", help="export winning architectures")
    p.add_argument("name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--pareto", action="store_true")
    which.add_argument("--knee", action="store_true")
    which.add_argument("--trial", type=int, action="append")
    p.add_argument("--root", default="nas-runs")
    p.add_argument("--out", default="exports")
    p.add_argument("--retrain-epochs", type=int, default=0)
    p.add_argument("--format", default="torchscript,state_dict,onnx")
    p.add_argument("--register", action="store_true")
    p.add_argument("--force", action="store_true")
    p.set_defaults(handler=_export)

    p = sub.add_parser("evaluate", help="accuracy and energy of an exported model")
    p.add_argument("path")
    p.add_argument("--dataset", default=None)
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("cluster", help="local multi-node Ray cluster for trying cluster mode")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--root", default="nas-runs")
    p.set_defaults(handler=_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NasError as error:
        print(f"nas: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
