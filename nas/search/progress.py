"""The live view of a running search: one panel instead of a wall of Ray logs.

On a terminal: a progress bar with the time left, the trials running now (epoch and latest metrics),
the counts (``nas.results.records.count_trials`` vocabulary), the best values and the normalised
hypervolume. Elsewhere (CI, pipes, log files): one line per event (a trial starts, reports an epoch,
ends). Either way the run folder and the commands to browse it are printed first.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from nas.results.records import COMPLETE, INTERRUPTED, TrialRecord, outcome_of


class LiveView:
    """A search listener that keeps one status panel up to date.

    On a terminal it redraws a rich panel in place; elsewhere (CI, pipes) it prints one line per
    event (a trial starts, reports an epoch, ends), so logs stay readable. ``root`` prints where the
    results go and how to browse them first; ``records`` are the trials an earlier run of the search
    finished (a resume), counted but not used for the time left.
    """

    def __init__(self, name: str, *, total_trials: int, objectives: dict[str, str], stream: TextIO | None = None,
                 live: bool | None = None, root: str | None = None, epochs: int | None = None,
                 records: Sequence[TrialRecord] = ()) -> None:
        self.name = name
        self.total = total_trials
        self.objectives = objectives
        self.stream = stream or sys.stdout
        self.epochs = epochs
        self.started = time.monotonic()
        self.running: set[int] = set()
        self.latest: dict[int, dict[str, Any]] = {}  # running trial -> its last epoch's metrics
        self._outcomes: dict[int, str] = {}  # trial number -> complete / pruned / failed
        self._count(records)  # what an earlier run finished (a resume): counted, not timed
        self._already_done = len(self._outcomes)
        self.best_acc: float | None = None
        self.min_energy: float | None = None
        self.front_size = 0
        self.hypervolume: float | None = None
        self._live = None
        if root is not None:
            print(f"search {name}: results in {root}/{name}; browse them with: nas ui --root {root}   |   "
                  f"nas dashboard {name} --root {root}", file=self.stream)
            print(f"starting Ray and the first trials ({total_trials} trials in all) ...", file=self.stream,
                  flush=True)
        use_live = live if live is not None else self.stream.isatty()
        if use_live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=2, transient=False)
            self._live.start()

    # listener protocol -------------------------------------------------------------------------
    def trial_started(self, number: int, params: dict[str, Any], *, attrs: dict[str, Any]) -> None:
        """A trial began running."""
        self.running.add(number)
        self.latest[number] = {"epoch": 0, "since": time.monotonic()}
        if self._live is None:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            print(f"[{self._elapsed()}] trial {number} started ({shown})", file=self.stream, flush=True)
        self._refresh()

    def trial_epoch(self, number: int, metrics: dict[str, float], step: int) -> None:
        """A trial reported an epoch."""
        entry = self.latest.setdefault(number, {"since": time.monotonic()})
        entry.update(metrics)
        entry["epoch"] = step
        if self._live is None:
            of = f"/{self.epochs}" if self.epochs else ""
            print(f"[{self._elapsed()}] trial {number} epoch {step}{of}{_metrics_text(metrics)}", file=self.stream,
                  flush=True)
        self._refresh()

    def trial_finished(self, number: int, state: str, *, reason: str | None = None,
                       final_metrics: dict | None = None) -> None:
        """A trial ended (complete, pruned or failed); an interrupted one runs again and is not counted."""
        self.running.discard(number)
        self.latest.pop(number, None)
        if reason == INTERRUPTED:
            self._outcomes.pop(number, None)
            state = "interrupted"
            reason = None
        else:
            self._outcomes[number] = state if state in ("complete", "pruned") else "failed"
        metrics = final_metrics or {}
        if self._live is None:
            acc = metrics.get("val_acc")
            energy = metrics.get("energy_uj")
            detail = f" ({reason})" if reason else ""
            acc_text = f" val_acc={acc:.4f}" if isinstance(acc, float) else ""
            energy_text = f" energy_uj={energy:.4g}" if isinstance(energy, float) else ""
            hv_text = f"  hypervolume {self.hypervolume:.4f}" if self.hypervolume is not None else ""
            print(f"[{self._elapsed()}] trial {number} {state}{detail}{acc_text}{energy_text}{hv_text}  "
                  f"done {self.done}/{self.total}", file=self.stream, flush=True)
        self._refresh()

    def update_front(self, records: list[TrialRecord], *, reference: dict[str, float], history: list[float],
                     force: bool = False) -> None:
        """Recompute the headline numbers from the study; the hypervolume shown is normalised (0..1)."""
        from nas.results.pareto import front_of, normalised_hypervolume

        if history:
            self.hypervolume = normalised_hypervolume(history[-1], self.objectives, reference)

        complete = [r for r in records if r.state == COMPLETE and r.values]
        accs = [r.values["val_acc"] for r in complete if "val_acc" in r.values]
        energies = [r.values["energy_uj"] for r in complete if "energy_uj" in r.values]
        self.best_acc = max(accs) if accs else None
        self.min_energy = min(energies) if energies else None
        self.front_size = len(front_of(records, self.objectives))
        self._count(records)
        self._refresh()

    def _count(self, records: Sequence[TrialRecord]) -> None:
        # The study may be ahead of the trial_finished events still queued: keyed by trial number,
        # a trial counts once whichever arrives first.
        for r in records:
            outcome = outcome_of(r)
            if outcome in ("complete", "pruned", "failed"):
                self._outcomes[r.number] = outcome
            else:  # interrupted trials run again; duplicates were never trained
                self._outcomes.pop(r.number, None)

    def close(self) -> None:
        """Stop redrawing."""
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    # rendering ---------------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Finished trials by outcome (complete, pruned, failed), each trial counted once."""
        counts = dict.fromkeys(("complete", "pruned", "failed"), 0)
        for outcome in self._outcomes.values():
            counts[outcome] += 1
        return counts

    @property
    def done(self) -> int:
        return len(self._outcomes)

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:d}:{seconds % 60:02d}"

    def eta_seconds(self) -> float | None:
        """Seconds left at the pace of the trials finished in this run (None before the first one)."""
        finished_here = self.done - self._already_done
        if finished_here <= 0:
            return None
        per_trial = (time.monotonic() - self.started) / finished_here
        return max(0, self.total - self.done) * per_trial

    def _eta(self) -> str:
        left = self.eta_seconds()
        return "?" if left is None else f"~{int(left // 60)}:{int(left % 60):02d}"

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(self.total, 1), completed=min(self.done, self.total), width=40),
                    f"{self.done}/{self.total} trials", f"{self._elapsed()} elapsed, {self._eta()} left")
        parts: list[Any] = [bar]
        if self.running:
            running = Table(title="running", title_justify="left", box=None, padding=(0, 2))
            for column in ("trial", "epoch", *self.objectives, "for"):
                running.add_column(column, justify="right")
            for number in sorted(self.running):
                entry = self.latest.get(number, {})
                of = f"/{self.epochs}" if self.epochs else ""
                seconds = int(time.monotonic() - entry.get("since", self.started))
                running.add_row(str(number), f"{entry.get('epoch', 0)}{of}",
                                *(_fmt(entry.get(name), ".4g") for name in self.objectives),
                                f"{seconds // 60}:{seconds % 60:02d}")
            parts.append(running)
        table = Table(show_header=False, box=None)
        table.add_row("trials", f"{len(self.running)} running, {self.counts['complete']} complete, "
                      f"{self.counts['pruned']} pruned, {self.counts['failed']} failed, of {self.total}")
        table.add_row("best val_acc", _fmt(self.best_acc, ".4f"))
        table.add_row("lowest energy_uj", _fmt(self.min_energy, ".4g"))
        table.add_row("front", f"{self.front_size} architectures, hypervolume {_fmt(self.hypervolume, '.4f')} "
                      "of the reference box")
        parts.append(table)
        from rich.panel import Panel

        return Panel(Group(*parts), title=f"nas search {self.name}", expand=False)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())


def _metrics_text(metrics: dict[str, Any]) -> str:
    shown = [(k, metrics[k]) for k in ("val_acc", "energy_uj", "train_loss") if isinstance(metrics.get(k), float)]
    return "".join(f" {k}={v:.4g}" for k, v in shown)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)
