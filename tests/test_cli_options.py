"""``nas launch`` hands every flag to ``SearchOptions`` by name: a flag renamed in the parser (or a field renamed in
``SearchOptions``) fails here instead of silently taking its default."""

from __future__ import annotations

import dataclasses

import pytest

from nas.cli import _search_options, build_parser
from nas.errors import NasError
from nas.search.options import SearchOptions

# Per field a flag sets: the flag, its text on the command line (None for a switch) and the value it must give.
FLAGS = {
    "name": ("--name", "other", "other"),
    "trials": ("--trials", "7", 7),
    "epochs": ("--epochs", "3", 3),
    "concurrency": ("--concurrency", "2", 2),
    "sampler": ("--sampler", "random", "random"),
    "sampler_history": ("--sampler-history", "50", 50),
    "scheduler": ("--scheduler", "none", "none"),
    "proxy": ("--proxy", "sahd", "sahd"),
    "proxy_rule": ("--proxy-rule", "top", "top"),
    "dataset": ("--dataset", "digits", "digits"),
    "data_src": ("--data-src", "/data", "/data"),
    "seed": ("--seed", "5", 5),
    "root": ("--root", "elsewhere", "elsewhere"),
    "storage": ("--storage", "sqlite:///x.db", "sqlite:///x.db"),
    "tracking_uri": ("--tracking-uri", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    "address": ("--address", "auto", "auto"),
    "storage_path": ("--storage-path", "/shared", "/shared"),
    "gpus_per_trial": ("--gpus-per-trial", "0.5", 0.5),
    "cpus_per_trial": ("--cpus-per-trial", "2", 2.0),
    "time_budget": ("--time-budget", "60", 60.0),
    "max_failures": ("--max-failures", "0", 0),
    "reduction_factor": ("--reduction-factor", "4", 4),
    "verbose": ("--verbose", None, True),
    "resume": ("--resume", None, True),
    "yes": ("--yes", None, True),
}
# Fields no flag of nas launch sets: they keep SearchOptions' defaults.
NOT_FLAGS = {"space", "grace_period", "object_store_mb"}


def test_every_launch_flag_reaches_its_search_option() -> None:
    argv = ["launch", "s.py"]
    for flag, text, _ in FLAGS.values():
        argv += [flag] if text is None else [flag, text]
    options = _search_options(build_parser().parse_args(argv))
    defaults = SearchOptions(space="s.py")
    assert {f.name for f in dataclasses.fields(SearchOptions)} == set(FLAGS) | NOT_FLAGS
    for field, (flag, _, value) in FLAGS.items():
        assert value != getattr(defaults, field)  # else the test could not tell the flag was passed on
        assert getattr(options, field) == value, f"{flag} did not reach SearchOptions.{field}"
    assert options.space == "s.py"


def test_search_options_check_their_values_when_made() -> None:
    with pytest.raises(NasError, match="--trials must be at least 1"):
        SearchOptions(space="s.py", trials=0)
    with pytest.raises(NasError, match="--sampler must be one of"):
        SearchOptions(space="s.py", sampler="grid")
    with pytest.raises(NasError, match="pass --yes"):
        SearchOptions(space="s.py", trials=5000)
    assert SearchOptions(space="s.py", trials=5000, yes=True).trials == 5000
