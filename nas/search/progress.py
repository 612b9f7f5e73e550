"""The live view of a running search: one compact panel instead of a wall of Ray logs."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from nas.search.records import COMPLETE, INTERRUPTED, TrialRecord, outcome_of


class LiveView:
    """A search listener that keeps one status panel up to date.

    On a terminal it redraws a rich panel in place; elsewhere (CI, pipes) it prints one line per
    finished trial, so logs stay readable.
    """

    def __init__(self, name: str, *, total_trials: int, objectives: dict[str, str], stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.name = name
        self.total = total_trials
        self.objectives = objectives
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.running: set[int] = set()
        self._outcomes: dict[int, str] = {}  # trial number -> complete / pruned / failed
        self.best_acc: float | None = None
        self.min_energy: float | None = None
        self.front_size = 0
        self.hypervolume: float | None = None
        self._live = None
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
        self._refresh()

    def trial_epoch(self, number: int, metrics: dict[str, float], step: int) -> None:
        """A trial reported an epoch."""
        self._refresh()

    def trial_finished(self, number: int, state: str, *, reason: str | None = None,
                       final_metrics: dict | None = None) -> None:
        """A trial ended (complete, pruned or failed); an interrupted one runs again and is not counted."""
        self.running.discard(number)
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
            print(f"[{self._elapsed()}] trial {number} {state}{detail}{acc_text}{energy_text}  "
                  f"done {self.done}/{self.total}", file=self.stream, flush=True)
        self._refresh()

    def update_front(self, records: list[TrialRecord], *, reference: dict[str, float], history: list[float],
                     force: bool = False) -> None:
        """Recompute the headline numbers from the study; the hypervolume shown is normalised (0..1)."""
        from nas.search.pareto import front_of, normalised_hypervolume

        if history:
            self.hypervolume = normalised_hypervolume(history[-1], self.objectives, reference)

        complete = [r for r in records if r.state == COMPLETE and r.values]
        accs = [r.values["val_acc"] for r in complete if "val_acc" in r.values]
        energies = [r.values["energy_uj"] for r in complete if "energy_uj" in r.values]
        self.best_acc = max(accs) if accs else None
        self.min_energy = min(energies) if energies else None
        self.front_size = len(front_of(records, self.objectives))
        # The study may be ahead of the trial_finished events still queued: keyed by trial number,
        # a trial counts once whichever arrives first.
        for r in records:
            outcome = outcome_of(r)
            if outcome in ("complete", "pruned", "failed"):
                self._outcomes[r.number] = outcome
            else:  # interrupted trials run again; duplicates were never trained
                self._outcomes.pop(r.number, None)
        self._refresh()

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

    def _eta(self) -> str:
        if not self.done:
            return "?"
        per_trial = (time.monotonic() - self.started) / self.done
        left = max(0, self.total - self.done) * per_trial
        return f"~{int(left // 60)}:{int(left % 60):02d}"

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"nas search {self.name}", show_header=False, box=None)
        table.add_row("trials", f"{len(self.running)} running, {self.counts['complete']} complete, "
                      f"{self.counts['pruned']} pruned, {self.counts['failed']} failed, of {self.total}")
        table.add_row("best val_acc", _fmt(self.best_acc, ".4f"))
        table.add_row("lowest energy_uj", _fmt(self.min_energy, ".4g"))
        table.add_row("front", f"{self.front_size} architectures, hypervolume {_fmt(self.hypervolume, '.4f')} "
                      "of the reference box")
        table.add_row("time", f"{self._elapsed()} elapsed, {self._eta()} left")
        return table

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)
