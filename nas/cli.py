"""The ``nas`` command: argument parsing and printing only.

Every handler calls one function of a room (``nas.data``, ``nas.energy``, ``nas.search``, ...) and
prints what it returns, so everything the CLI does is reachable through the Python API.
A ``NasError`` becomes one line on stderr and exit code 2, and so does every error a user's input or
machine can cause (a path that cannot be written, a full disk, a storage, MLflow or Ray failure):
the line names the path or URL and what to do, and ``--verbose`` adds the traceback. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from nas.errors import NasError
from nas.search.choices import (
    DEFAULT_PROXY,
    DEFAULT_PROXY_RULE,
    DEFAULT_SAMPLER,
    DEFAULT_SCHEDULER,
    EXPORT_FORMATS,
    PROXIES,
    PROXY_RULES,
    SAMPLERS,
    SCHEDULERS,
)

if TYPE_CHECKING:  # pragma: no cover
    from nas.search.options import SearchOptions, SearchResult


# ---------------------------------------------------------------- doctor (issue 2)
def _doctor(args: argparse.Namespace) -> int:
    from nas.doctor import check_machine, render_report

    report = check_machine(start_ray=not args.no_ray)
    print(render_report(report))
    return 0 if report.ok else 1


# ---------------------------------------------------------------- data (issue 2)
def _data_build(args: argparse.Namespace) -> int:
    from nas.data import build, render_build

    print(render_build(build(args.name, src=args.src, out=args.out, progress=True)))
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from nas.data import describe, render_info

    print(render_info(describe(args.file)))
    return 0


# ---------------------------------------------------------------- energy (issue 4)
def _energy(args: argparse.Namespace) -> int:
    import json

    from nas.energy import get_profile, input_size, load_checkpoint, measure_on_random, render_table
    from nas.snn import create_model, list_models

    profile = get_profile(args.profile)  # a bad profile fails before a model is built
    if args.model not in list_models():
        raise NasError(f"unknown model {args.model!r} (known: {', '.join(list_models())})")
    for flag, value, limit in (("--batch-size", args.batch_size, 4096), ("--img-size", args.img_size, 2048),
                               ("--time-steps", args.time_steps, 1024), ("--num-classes", args.num_classes, 100_000),
                               ("--in-chans", args.in_chans, 1024)):
        if value is not None and not 1 <= value <= limit:
            raise NasError(f"{flag} must be in 1..{limit}, got {value}")
    overrides = {"time_steps": args.time_steps} if args.time_steps is not None else {}
    try:
        model = create_model(
            args.model, num_classes=args.num_classes, img_size=args.img_size, in_chans=args.in_chans, **overrides
        )
    except (ValueError, TypeError) as error:
        raise NasError(f"model {args.model}: {error}") from error
    if args.checkpoint is not None:
        load_checkpoint(model, args.checkpoint)
    else:
        print("nas: warning: random weights (BatchNorm statistics calibrated on random images); firing rates and "
              "SOPs of untrained weights are not meaningful, use --checkpoint for trained ones", file=sys.stderr)
    size, _ = input_size(model, args.img_size, args.in_chans)
    _progress_printer()(f"measuring {args.model} on {args.batch_size} image(s) at {size}x{size} ...")
    report = measure_on_random(model, profile, batch_size=args.batch_size, img_size=args.img_size,
                               in_chans=args.in_chans, calibrate=args.checkpoint is None, name=args.model)
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_table(report))
    return 0


# ---------------------------------------------------------------- search (issue 6)
def _search_options(args: argparse.Namespace) -> SearchOptions:
    from nas.search.options import SearchOptions

    # Every flag named: a flag renamed in the parser fails here, instead of silently taking its default.
    return SearchOptions(
        space=args.space, name=args.name, trials=args.trials, epochs=args.epochs, concurrency=args.concurrency,
        sampler=args.sampler, sampler_history=args.sampler_history, scheduler=args.scheduler, proxy=args.proxy,
        proxy_rule=args.proxy_rule, dataset=args.dataset, data_src=args.data_src, seed=args.seed, root=args.root,
        storage=args.storage, tracking_uri=args.tracking_uri, address=args.address, storage_path=args.storage_path,
        gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial, time_budget=args.time_budget,
        max_failures=args.max_failures, reduction_factor=args.reduction_factor, verbose=args.verbose,
        resume=args.resume, yes=args.yes,
    )


def _print_result(result: SearchResult, root: str) -> int:
    """Print what a search produced and the line that says how it ended; returns the exit status."""
    import signal

    from nas.results.records import count_trials
    from nas.search.options import EXIT_TIME_BUDGET
    from nas.search.summary import front_rows, render_front

    rows = front_rows(result.records, result.objectives)
    print(render_front(rows, title=f"Pareto front of {result.name} ({len(rows)} architectures)"))
    hv = "-"
    if result.hypervolume is not None:
        reference = ", ".join(f"{k}={v:.4g}" for k, v in result.reference.items())
        normalised = result.normalised_hypervolume
        hv = (f"{normalised:.4f} of the reference box (raw {result.hypervolume:.4g}; reference {reference})"
              if normalised is not None else f"{result.hypervolume:.4g} (reference {reference})")
    if result.space_exhausted:
        print(f"search {result.name}: every architecture of the space has been tried; the search ended early")
    done = f"{result.trials_done} of {result.trials} trials"
    print(f"trials: {count_trials(result.records).text()}")
    resume = f"nas resume {result.name} --root {root}"
    print(f"browse it: nas ui --root {root}   |   nas dashboard {result.name} --root {root}   |   "
          f"nas pareto {result.name} --root {root}")
    if result.interrupted:
        signum = result.stop_signal or signal.SIGINT
        print(f"search {result.name} interrupted by {signal.Signals(signum).name} after {done} "
              f"({result.seconds:.0f} s); resume with: {resume}")
        return 128 + signum
    if result.time_budget_reached:
        print(f"search {result.name} stopped: its time budget ran out after {done} ({result.seconds:.0f} s); "
              f"continue with: {resume} [--time-budget SECONDS]")
        return EXIT_TIME_BUDGET
    if result.error:
        print(f"search {result.name} stopped after {done} ({result.seconds:.0f} s); hypervolume {hv}")
        print(f"nas: error: search {result.name} stopped: {result.error}", file=sys.stderr)
        return 2
    print(f"search {result.name} finished in {result.seconds:.0f} s ({done}); hypervolume {hv}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    from nas._launch import launch

    return _print_result(launch(_search_options(args)), args.root)


def _resume(args: argparse.Namespace) -> int:
    from nas._launch import launch
    from nas.search.options import SearchOptions

    options = SearchOptions(space="", name=args.name, root=args.root, address=args.address, storage=args.storage,
                            tracking_uri=args.tracking_uri, verbose=args.verbose, resume=True,
                            time_budget=args.time_budget)
    return _print_result(launch(options), args.root)


def _progress_printer() -> Callable[[str], None]:
    """Print each step of a long command on stderr with the seconds since it started, for a person at a
    terminal (stdout stays the result; a pipe or log gets neither the steps nor their noise)."""
    import time

    started = time.monotonic()
    if not sys.stderr.isatty():
        return lambda line: None

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {line}", file=sys.stderr, flush=True)

    return say


def _search_name(args: argparse.Namespace) -> str:
    """The search a command reads: NAME, or the newest search of --root (said on stderr, so --json stays clean)."""
    from nas.search.runs import newest_search_name

    if args.name:
        return args.name
    name = newest_search_name(args.root)
    print(f"search {name} (the newest in {args.root}; pass NAME for another)", file=sys.stderr)
    return name


def _status(args: argparse.Namespace) -> int:
    from nas.search.runs import list_search_names, open_search
    from nas.search.summary import render_rows, status_row

    names = [args.name] if args.name else list_search_names(args.root)
    if not names:
        print(f"no searches in {args.root}")
        return 0
    rows = []
    for name in names:
        handle = open_search(args.root, name, storage=args.storage)
        rows.append(status_row(name, handle.summary, handle.options, handle.normalised_hypervolume))
    print(render_rows(rows, title=f"searches in {args.root}"))
    return 0


def _pareto(args: argparse.Namespace) -> int:
    import json

    from nas.search.runs import open_search
    from nas.search.summary import front_rows, render_front

    name = _search_name(args)
    handle = open_search(args.root, name, storage=args.storage)
    records, shared = handle.front_points()
    rows = front_rows(records, handle.objectives, shared)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(render_front(rows, title=f"Pareto front of {name} ({len(rows)} architectures)"))
    return 0


def _train(args: argparse.Namespace) -> int:
    from nas.search.options import LARGE_BUDGETS, SEED_MAX
    from nas.search.summary import render_rows
    from nas.space import load_space, parse_params, train_params

    if args.epochs is not None and not 1 <= args.epochs <= LARGE_BUDGETS["epochs"]:
        raise NasError(f"--epochs must be in 1..{LARGE_BUDGETS['epochs']}, got {args.epochs}")
    if not 0 <= args.seed <= SEED_MAX:
        raise NasError(f"--seed must be in 0..{SEED_MAX}, got {args.seed}")
    space = load_space(args.space, check_samples=0)
    params = parse_params(args.params, args.trial_config)
    rows = []
    from nas.results.metrics import EPOCH_COLUMNS as columns

    for metrics in train_params(space, params, epochs=args.epochs, dataset=args.dataset, seed=args.seed):
        rows.append({k: metrics.get(k) for k in columns})
        print(f"epoch {metrics['epoch']}: val_acc {metrics['val_acc']:.4f}  energy_uj {metrics['energy_uj']:.4g}  "
              f"{metrics['epoch_seconds']:.1f} s", flush=True)
    print(render_rows(rows, title=f"{space.name} candidate {params}"))
    return 0


# ---------------------------------------------------------------- tracking views (issue 7)
def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.dashboards import load_layer_reports, write_report
    from nas.results.pareto import front_of
    from nas.search.runs import open_search

    handle = open_search(args.root, _search_name(args), storage=args.storage)
    say = _progress_printer()
    say(f"reading {handle.name} and drawing its report ...")
    records = handle.records
    front = front_of(records, handle.objectives)
    path = write_report(
        records,
        objectives=handle.objectives,
        reference=handle.reference or None,
        out_dir=Path(args.out) if args.out else handle.search_dir,
        title=f"nas search {handle.name}",
        layer_reports=load_layer_reports(handle.search_dir, records, [r.number for r in front]),
        filename=f"{handle.name}.html" if args.out else "report.html",
    )
    members = ", ".join(f"#{r.number}" for r in front) or "none"
    print(f"report of {handle.name} ({len(records)} trials, front: {members})")
    print(path)
    return 0


def _serve_until_stopped(server: Any, describe: Callable[[str], None]) -> int:
    """Start ``server``, print ``describe(url)`` and wait until it exits, Ctrl-C or SIGTERM; it is stopped in any case.

    SIGTERM counts as Ctrl-C from the moment the server runs, not only once ``wait`` starts: a signal sent
    right after the "stops it" line must still stop the server's whole process tree.
    """
    from nas._serve import sigterm_as_interrupt

    url = server.start()
    try:
        with sigterm_as_interrupt():
            describe(url)
            print("Ctrl-C (or SIGTERM) stops it", flush=True)
            return server.wait()
    finally:
        server.stop()


def _ui(args: argparse.Namespace) -> int:
    from nas.search.runs import check_root, list_search_names
    from nas.tracking import (
        CHART_VIEW,
        FRONT_VIEW,
        MlflowUi,
        experiment_url,
        find_parent_run,
        run_url,
        saved_views,
        view_link,
    )

    if not 0 < args.port < 65536:
        raise NasError(f"--port must be in 1..65535, got {args.port}")
    check_root(args.root)
    ui = MlflowUi(args.root, port=args.port, tracking_uri=args.tracking_uri)
    print(f"starting the MLflow UI for {ui.tracking_uri} ...", flush=True)

    def describe(url: str) -> None:
        print(f"MLflow UI: {url}")
        names = list_search_names(args.root)
        found = find_parent_run(ui.tracking_uri, names[-1]) if names else None  # the newest search
        if found:
            print(f"search {names[-1]}: {run_url(url, *found)}")
            print(f"  its runs: {experiment_url(url, found[0])}")
            labels = {FRONT_VIEW: "its Pareto front", CHART_VIEW: "its objectives chart"}
            for view in saved_views(ui.tracking_uri, found[0]):
                print(f"  {labels[view]}: {url}/{view_link(found[0], view)}")

    return _serve_until_stopped(ui, describe)


def _dashboard(args: argparse.Namespace) -> int:
    from nas.dashboards.optuna_dashboard import dashboard_for

    if not 0 < args.port < 65536:
        raise NasError(f"--port must be in 1..65535, got {args.port}")
    name = _search_name(args)
    dashboard = dashboard_for(args.root, name, port=args.port, storage=args.storage)
    print(f"starting optuna-dashboard for {name} ...", flush=True)

    def describe(url: str) -> None:
        print(f"optuna-dashboard: {dashboard.url}")
        print(f"search {name}: {url}")

    return _serve_until_stopped(dashboard, describe)


# ---------------------------------------------------------------- export (issue 8)
def _export(args: argparse.Namespace) -> int:
    from nas.export import ExportOptions, export_search, parse_formats

    options = ExportOptions(
        name=_search_name(args), root=args.root, storage=args.storage, tracking_uri=args.tracking_uri,
        pareto=args.pareto, knee=args.knee, trials=list(args.trial or []),
        out=args.out, retrain_epochs=args.retrain_epochs, formats=parse_formats(args.format),
        register=args.register, force=args.force,
    )
    exported = export_search(options, progress=_progress_printer())
    print(f"{'trial':>5}  {'rank':>4}  {'weights':<9}  {'val_acc':>7}  {'energy_uj':>9}  {'onnx':<12}  "
          f"{'registry':<24}  folder")
    for e in exported:
        rank = "-" if e.pareto_rank is None else str(e.pareto_rank)
        onnx = e.onnx if e.onnx.endswith(".onnx") else "none"
        registry = f"v{e.registered_version} {','.join(e.aliases)}".strip() if e.registered_version else "-"
        print(f"{e.trial:>5}  {rank:>4}  {e.weights_source:<9}  {e.metrics['val_acc']:>7.4f}  "
              f"{e.metrics['energy_uj']:>9.4g}  {onnx:<12}  {registry:<24}  {e.folder}")
    for e in exported:
        if not e.onnx.endswith(".onnx"):
            print(f"trial {e.trial}: no ONNX ({e.onnx})")
    print(f"{len(exported)} model(s) exported to {options.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from nas.energy import render_table
    from nas.export import evaluate_export

    result = evaluate_export(args.path, dataset=args.dataset)
    print(render_table(result.report))
    print(f"val_acc {result.val_acc!r} on {result.images} validation images of {result.dataset}")
    return 0


# ---------------------------------------------------------------- cluster (issue 9)
def _cluster(args: argparse.Namespace) -> int:
    from nas.cluster import cluster_down, cluster_status, cluster_up
    from nas.search.runs import check_root

    check_root(args.root)
    if args.action == "down":
        was_up = cluster_status(args.root).state is not None
        cluster_down(args.root)
        print("local Ray cluster stopped" if was_up else f"no local Ray cluster in {args.root}")
        return 0
    if args.action == "up":
        state = cluster_up(args.root, workers=args.workers)
        print(f"local Ray cluster up in {state.up_seconds:.1f} s")
    status = cluster_status(args.root)
    if status.state is None:
        print(f"no local Ray cluster in {args.root} (start one with `nas cluster up`)")
        return 1
    print(f"{'node':<10} {'address':<12} {'CPUs':>4}  {'pid':>7}  state")
    for node in status.nodes:
        running = "running" if node.running else "DOWN"
        print(f"{node.name:<10} {node.node_ip:<12} {node.cpus:>4}  {node.pid:>7}  {running}")
    print(f"head address {status.address}; object store {status.state.object_store_mb} MiB per node")
    print("point a shell or `nas launch --address auto` at it with:")
    print(f"  {status.state.export_line()}")
    return 0 if status.up else 1


# ---------------------------------------------------------------- learning-curve benchmark (issue 13)
def _bench_build(args: argparse.Namespace) -> int:
    from nas.bench import build_table

    build_table(args.space, args.out, count=args.count, seed=args.seed, workers=args.workers, threads=args.threads,
                progress=lambda line: print(line, flush=True))
    return 0


def _bench_info(args: argparse.Namespace) -> int:
    from nas.bench import load_table
    from nas.bench.stats import render_statistics, table_statistics

    for name in args.table:
        print(render_statistics(table_statistics(load_table(name))))
    return 0


def _bench_run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from nas.bench import compare, default_budget, load_table, render, settings_grid, to_dict
    from nas.bench.proxy_scores import load_proxy_scores
    from nas.bench.simulator import cost_column

    for flag, count in (("--workers", args.workers), ("--seeds", args.seeds), ("--processes", args.processes)):
        if count < 1:
            raise NasError(f"{flag} must be at least 1, got {count}")
    if not 0 < args.fraction <= 1:
        raise NasError(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        raise NasError(f"--budget must be positive simulated seconds, got {args.budget}")
    for eta in args.eta:
        if not (math.isfinite(eta) and eta > 1):
            raise NasError(f"--eta must be greater than 1, got {eta}")
    results, tables = [], []
    for name in args.table:
        table = load_table(name)
        budget = args.budget or default_budget(table, args.workers)
        grid = settings_grid(args.sampler, args.scheduler, args.eta, workers=args.workers, budget=budget,
                             proxies=args.proxy, proxy_rules=args.proxy_rule)
        scores = None
        if any(p != "none" for p in args.proxy):
            if args.proxy_scores is None:
                raise NasError("--proxy sahd needs --proxy-scores FILE (written by benchmarks/bench_proxy.py)")
            scores = load_proxy_scores(args.proxy_scores, table, clock=cost_column(table))
        comparison = compare(table, grid, seeds=args.seeds, fraction=args.fraction, processes=args.processes,
                             proxy_scores=scores)
        print(render(comparison), flush=True)
        print()
        results.append(to_dict(comparison))
        tables.append(render(comparison, markdown=True))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"figures written to {args.json}")
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(tables) + "\n")
        print(f"Markdown tables written to {args.markdown}")
    return 0


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: the space's)")
    p.add_argument("--epochs", type=int, default=None, help="max fidelity in epochs (default: the space's)")
    p.add_argument("--concurrency", type=int, default=None, help="trials running at once")
    p.add_argument("--name", default=None, help="search name (default: space name + timestamp)")
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
                   help=f"Optuna sampler that proposes architectures (default {DEFAULT_SAMPLER})")
    p.add_argument("--sampler-history", type=int, default=None, metavar="N",
                   help="let the sampler model only the N most recent finished trials plus the Pareto front, so "
                        "each proposal stays fast in searches of many thousands of trials (default: every trial)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULT_SCHEDULER,
                   help=f"early stopping: MOASHA (-nsga2 crowding or -epsnet order within a front), Ray's "
                        f"single-metric ASHA on val_acc, or none (default {DEFAULT_SCHEDULER})")
    p.add_argument("--reduction-factor", type=int, default=3,
                   help="eta: a MOASHA/ASHA rung keeps 1/eta of the trials, and the proxy rung trains 1 of eta "
                        "proposals (default 3)")
    p.add_argument("--proxy", choices=PROXIES, default=DEFAULT_PROXY,
                   help="rung 0 without training: sahd scores round(--reduction-factor) proposals at a time at "
                        f"initialisation and trains only those --proxy-rule keeps (default {DEFAULT_PROXY})")
    p.add_argument("--proxy-rule", choices=PROXY_RULES, default=DEFAULT_PROXY_RULE,
                   help="top: the best SAHD of each batch; front: those non-dominated on SAHD x initial energy "
                        f"(default {DEFAULT_PROXY_RULE})")
    p.add_argument("--dataset", default=None, help="dataset name (default: the space's)")
    p.add_argument("--data-src", default=None, help="source folder of the dataset (cifar10, imagefolder, ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of training (default 0)")
    p.add_argument("--root", default="nas-runs", help="run folder (default ./nas-runs)")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the study storage")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite in the run folder)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (auto or HOST:PORT)")
    p.add_argument("--storage-path", default=None, help="trial files on a path every node can reach")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each trial holds, may be a fraction (0)")
    p.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs each trial holds (default: 1, or the CPUs shared out by --concurrency)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop launching trials after it")
    p.add_argument("--max-failures", type=int, default=1, help="Ray retries of a crashing trial")
    p.add_argument("--yes", action="store_true", help="accept very large budgets (--trials, --epochs, --concurrency)")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and the traceback of an error")


_NAME_HELP = "the search (default: the newest of --root)"


def _add_reading_options(p: argparse.ArgumentParser, *, tracking: bool) -> None:
    """--root and the overrides of where a search's study (and MLflow runs) are, for commands that read one."""
    p.add_argument("--root", default="nas-runs", help="run folder (default ./nas-runs)")
    p.add_argument("--storage", default=None,
                   help="study storage URL instead of the recorded one (needed when it holds a password)")
    if tracking:
        p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI instead of the recorded one")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nas: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``nas`` argument parser."""
    parser = _Parser(prog="nas", description="Architecture search for spiking neural networks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check what this machine has for nas")
    p.add_argument("--no-ray", action="store_true", help="skip starting a local Ray")
    p.set_defaults(handler=_doctor)

    data_parser = sub.add_parser("data", help="datasets as FFCV .beton files")
    data = data_parser.add_subparsers(dest="data_command", required=True)
    p = data.add_parser(
        "build", help="write train/validation .beton files (cached)",
        description="Write a dataset's train/validation .beton files (cached). Event datasets (nmnist, dvsgesture, "
                    "cifar10dvs) are binned into T frames by event count, as the papers do; NAME-tT picks T "
                    "(dvsgesture-t8), NAME alone the papers' T for that dataset.",
    )
    p.add_argument("name", help="mnist, digits, cifar10, cifar100, imagefolder, nmnist, dvsgesture, cifar10dvs "
                                "(event datasets: NAME-tT for T frames)")
    p.add_argument("--src", default=None, help="source folder (cifar10, cifar100, imagefolder, nmnist, dvsgesture, "
                                               "cifar10dvs)")
    p.add_argument("--out", default=None, help="output folder (default $NAS_DATA_DIR or ~/.cache/nas/data)")
    p.set_defaults(handler=_data_build)
    p = data.add_parser("info", help="describe a .beton file")
    p.add_argument("file", help="a .beton file written by nas data build")
    p.set_defaults(handler=_data_info)

    p = sub.add_parser("energy", help="per-layer energy table of a registered model")
    p.add_argument("model", help="a registered model name (python -c 'import nas.snn; print(nas.snn.list_models())')")
    p.add_argument("--img-size", type=int, default=None, help="input image side in pixels (default: the model's)")
    p.add_argument("--time-steps", type=int, default=None, help="time steps T (default: the model's)")
    p.add_argument("--profile", default="45nm", help="energy profile name or a TOML/YAML profile file (default 45nm)")
    p.add_argument("--checkpoint", default=None, help="trained weights (state_dict); random weights without it")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the model's)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (default: the model's)")
    p.add_argument("--batch-size", type=int, default=2, help="images measured at once (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_energy)

    p = sub.add_parser("launch", help="run a search")
    p.add_argument("space", help="search-space file")
    p.add_argument("--resume", action="store_true", help="continue the search of the same --name")
    _add_search_options(p)
    p.set_defaults(handler=_launch)

    p = sub.add_parser("train", help="train one candidate of a space outside any search")
    p.add_argument("space", help="search-space file")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--params", default=None, help="the candidate's params as JSON, e.g. '{\"width\": 32}'")
    given.add_argument("--trial-config", default=None, help="a JSON file of params (or an arch.json)")
    p.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the space's)")
    p.add_argument("--dataset", default=None, help="dataset name (default: the space's)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data order (default 0)")
    p.set_defaults(handler=_train)

    p = sub.add_parser("resume", help="continue a stopped search")
    p.add_argument("name", help="the search to continue")
    _add_reading_options(p, tracking=True)
    p.add_argument("--address", default=None, help="join an existing Ray cluster (auto or HOST:PORT)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for this run (default: none; the budget of an earlier run is not reused)")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and the traceback of an error")
    p.set_defaults(handler=_resume)

    p = sub.add_parser("status", help="searches in the run folder")
    p.add_argument("name", nargs="?", help="one search (default: every search of --root)")
    _add_reading_options(p, tracking=False)
    p.set_defaults(handler=_status)

    p = sub.add_parser("pareto", help="the Pareto front of a search")
    p.add_argument("name", nargs="?", help=_NAME_HELP)
    _add_reading_options(p, tracking=False)
    p.add_argument("--json", action="store_true", help="print the front as JSON")
    p.set_defaults(handler=_pareto)

    p = sub.add_parser("report", help="self-contained HTML report of a search")
    p.add_argument("name", nargs="?", help=_NAME_HELP)
    _add_reading_options(p, tracking=False)
    p.add_argument("--out", default=None, help="folder for NAME.html (default: report.html in the search's folder)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("ui", help="MLflow UI for the run folder on 127.0.0.1")
    p.add_argument("--root", default="nas-runs", help="run folder (default ./nas-runs)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store to serve (default: the run folder's SQLite)")
    p.set_defaults(handler=_ui)

    p = sub.add_parser("dashboard", help="optuna-dashboard for a search on 127.0.0.1")
    p.add_argument("name", nargs="?", help=_NAME_HELP)
    _add_reading_options(p, tracking=False)
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    p.set_defaults(handler=_dashboard)

    p = sub.add_parser("export", help="export winning architectures")
    p.add_argument("name", nargs="?", help=_NAME_HELP)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--pareto", action="store_true", help="every member of the Pareto front")
    which.add_argument("--knee", action="store_true", help="the front's knee: the best trade-off of the objectives")
    which.add_argument("--trial", type=int, action="append", help="trial number N (repeat for more)")
    _add_reading_options(p, tracking=True)
    p.add_argument("--out", default="exports", help="folder of the export folders (default ./exports)")
    p.add_argument("--retrain-epochs", type=int, default=0,
                   help="train each model again from scratch for N epochs (default 0: the search's weights)")
    p.add_argument("--format", default=",".join(EXPORT_FORMATS),
                   help=f"comma-separated, from {', '.join(EXPORT_FORMATS)} (default all)")
    p.add_argument("--register", action="store_true",
                   help="also register the models in the MLflow registry under the search's name")
    p.add_argument("--force", action="store_true", help="replace export folders that exist")
    p.set_defaults(handler=_export)

    p = sub.add_parser("evaluate", help="accuracy and energy of an exported model")
    p.add_argument("path", help="an export folder (or its model file)")
    p.add_argument("--dataset", default=None, help="dataset to evaluate on (default: the one it was searched on)")
    p.set_defaults(handler=_evaluate)

    bench_parser = sub.add_parser("bench", help="learning-curve tables and the search simulator")
    bench = bench_parser.add_subparsers(dest="bench_command", required=True)
    p = bench.add_parser("build", help="train a seeded random sample of a space's architectures into a table")
    p.add_argument("space", help="search-space file")
    p.add_argument("--count", type=int, default=100, help="architectures to train (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the architecture sample and of training")
    p.add_argument("--out", required=True, help="table file to write (.json.gz); rerun the same command to resume")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.set_defaults(handler=_bench_build)
    p = bench.add_parser("info", help="what a table holds: counts, cost, rank correlations, the true front")
    p.add_argument("table", nargs="+", help="shipped table name, nasbench201[-DATASET[-COST]], or a table file")
    p.set_defaults(handler=_bench_info)
    p = bench.add_parser("run", help="replay searches on tables in simulated time and compare settings over seeds")
    p.add_argument("--table", nargs="+", required=True,
                   help="shipped table name (nas/bench/tables), nasbench201[-DATASET[-COST]], or a table file")
    p.add_argument("--sampler", nargs="+", choices=SAMPLERS, default=[DEFAULT_SAMPLER],
                   help=f"samplers to compare, from {', '.join(SAMPLERS)} (default {DEFAULT_SAMPLER})")
    p.add_argument("--scheduler", nargs="+", choices=SCHEDULERS, default=[DEFAULT_SCHEDULER],
                   help=f"schedulers to compare, from {', '.join(SCHEDULERS)} (default {DEFAULT_SCHEDULER})")
    p.add_argument("--eta", nargs="+", type=float, default=[3.0], help="reduction factors of the schedulers (3)")
    p.add_argument("--proxy", nargs="+", choices=PROXIES, default=[DEFAULT_PROXY],
                   help=f"rung 0 without training: none, or sahd (keeps 1 of every round(eta) proposals by the "
                        f"rule; default {DEFAULT_PROXY})")
    p.add_argument("--proxy-rule", nargs="+", choices=PROXY_RULES, default=[DEFAULT_PROXY_RULE],
                   help="top: the best score of each batch; front: those non-dominated on score x initial energy")
    p.add_argument("--proxy-scores", default=None,
                   help="the tables' proxy scores (benchmarks/results/proxy_scores.json.gz), needed with --proxy sahd")
    p.add_argument("--workers", type=int, default=4, help="trials running at once (default 4)")
    p.add_argument("--budget", type=float, default=None,
                   help="simulated seconds (default: the time the workers need to train a quarter of the table)")
    p.add_argument("--seeds", type=int, default=20, help="seeds per setting (default 20)")
    p.add_argument("--fraction", type=float, default=0.98, help="target share of the true front's hypervolume")
    p.add_argument("--processes", type=int, default=1, help="processes running simulations (default 1)")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument("--markdown", default=None, help="also write the tables as Markdown to this file")
    p.set_defaults(handler=_bench_run)

    p = sub.add_parser("cluster", help="local multi-node Ray cluster for trying cluster mode")
    p.add_argument("action", choices=["up", "down", "status"], help="start, stop or describe the local cluster")
    p.add_argument("--workers", type=int, default=2, help="worker nodes beside the head (default 2)")
    p.add_argument("--root", default="nas-runs", help="run folder that holds the cluster's files (default ./nas-runs)")
    p.set_defaults(handler=_cluster)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command a ``--verbose`` that shows the traceback behind a one-line error."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child)
    if parser._subparsers is None and "--verbose" not in parser._option_string_actions:
        parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas`` command."""
    parser = build_parser()
    _add_verbose(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "verbose", False):
        from nas._quiet import quiet_libraries

        quiet_libraries()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        line = error_line(error)
        if line is None:
            raise  # a bug: keep the traceback
        if getattr(args, "verbose", False):
            import traceback

            traceback.print_exception(error.__cause__ or error, file=sys.stderr)
        print(f"nas: error: {line}", file=sys.stderr)
        return 2


_ERRNO_HINTS = {
    "EACCES": "permission denied: choose another folder or fix its permissions",
    "EPERM": "not permitted: choose another folder or fix its permissions",
    "EROFS": "read-only file system: choose a writable folder",
    "ENOSPC": "no space left on the device: free some space or choose another folder",
    "EDQUOT": "disk quota exceeded: free some space or choose another folder",
    "ENOTDIR": "a file is in the way of a folder",
    "EISDIR": "is a folder, a file was expected",
    "EEXIST": "already exists",
    "ENOENT": "no such file or folder",
    "ENAMETOOLONG": "file name too long",
}
# Libraries whose exceptions stand for a problem with the user's storage, tracking server or cluster.
_SERVICE_LIBRARIES = ("sqlalchemy", "mlflow", "ray", "optuna", "psycopg2")


def error_line(error: BaseException) -> str | None:
    """The one line the CLI prints for an error a user can cause, or ``None`` for a bug.

    ``NasError`` says it itself; an ``OSError`` names its path and what to do; errors of the
    storage, MLflow and Ray libraries name themselves and point at ``--verbose``.
    """
    import errno

    from nas._urls import mask_urls_in

    if isinstance(error, NasError):
        return str(error)
    if isinstance(error, OSError):
        code = errno.errorcode.get(error.errno or 0, "")
        what = _ERRNO_HINTS.get(code) or error.strerror or str(error) or type(error).__name__
        paths = [p for p in (error.filename, error.filename2) if p is not None]
        where = " -> ".join(str(p) for p in paths)
        return mask_urls_in(f"{where}: {what}" if where else f"{what} ({type(error).__name__})")
    if isinstance(error, MemoryError):
        return "out of memory; try a smaller model, batch or image size"
    if type(error).__module__.split(".")[0] in _SERVICE_LIBRARIES:
        cause = error
        while cause.__cause__ is not None and type(cause.__cause__).__module__.split(".")[0] in _SERVICE_LIBRARIES:
            cause = cause.__cause__
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        text = lines[0] if lines else ""
        return mask_urls_in(f"{type(cause).__name__}: {text[:300]} (rerun with --verbose for the traceback)")
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
