"""The CLI explains itself: help text for every option (choices listed), tables that fit the terminal."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from nas.cli import _add_verbose, build_parser
from nas.search.summary import render_rows


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.Action,
                                                                                           argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action, parser


def test_every_option_has_help_and_its_choices_are_listed() -> None:
    parser = build_parser()
    _add_verbose(parser)
    missing = [f"nas {command} {action.option_strings or action.dest}" for command, action, _ in _options(parser)
               if not action.help]
    assert not missing
    for command, action, sub in _options(parser):
        if action.choices:
            text = sub.format_help()
            assert all(str(choice) in text for choice in action.choices), (command, action.dest)


def test_tables_take_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"search": "snnmlp-20261201-120000", "space": "snnmlp.py", "done": "16/16", "complete": 6, "pruned": 10,
             "failed": 0, "interrupted": 0, "duplicate": 3, "running": 0, "best_val_acc": 0.9812,
             "min_energy_uj": 0.1234, "hypervolume": 0.8765, "storage": "sqlite:///{run_folder}/optuna.db"}]
    for width in (80, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        lines = render_rows(rows, title="searches").splitlines()
        assert max(len(line) for line in lines) <= width
    monkeypatch.setenv("COLUMNS", "80")
    assert "0.9812" in render_rows(rows, title="searches")


def test_long_commands_say_each_step_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from nas.cli import _progress_printer

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    _progress_printer()("loading mnist for 3 model(s) ...")
    monkeypatch.setattr(sys, "stderr", pipe)
    _progress_printer()("loading mnist for 3 model(s) ...")
    assert terminal.getvalue().endswith(" s] loading mnist for 3 model(s) ...\n") and pipe.getvalue() == ""
