"""The live view's counts when the study runs ahead of the finished-trial events (plain-text mode)."""

from __future__ import annotations

import io

from nas.results.records import TrialRecord
from nas.search.progress import LiveView

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}


def _record(number: int, state: str, reason: str | None = None) -> TrialRecord:
    values = {"val_acc": 0.5 + number / 100, "energy_uj": 10.0 - number} if state == "COMPLETE" else None
    return TrialRecord(number=number, state=state, params={"width": number}, values=values,
                       user_attrs={"fail_reason": reason} if reason else {})


def test_each_trial_counts_once_whichever_event_comes_first() -> None:
    out = io.StringIO()
    view = LiveView("s", total_trials=4, objectives=OBJECTIVES, stream=out, live=False)
    view.trial_finished(0, "complete", final_metrics={"val_acc": 0.5, "energy_uj": 10.0})
    # The bookkeeping thread reads the study after trials 1 (pruned) and 3 (complete) have been told,
    # before their own trial_finished events are delivered; 2 is a duplicate (never trained).
    view.update_front([_record(0, "COMPLETE"), _record(1, "PRUNED"), _record(2, "DUPLICATE"),
                       _record(3, "COMPLETE")], reference={"val_acc": 0.0, "energy_uj": 20.0}, history=[5.0, 9.0])
    assert view.hypervolume == 9.0 / 20.0  # shown as the fraction of the reference box
    view.trial_finished(1, "pruned")
    view.trial_finished(3, "complete", final_metrics={"val_acc": 0.53, "energy_uj": 7.0})
    assert view.done == 3 and view.counts == {"complete": 2, "pruned": 1, "failed": 0}
    view.trial_finished(4, "failed", reason="RuntimeError: boom")
    view.update_front([_record(4, "FAIL", "RuntimeError: boom"), _record(5, "FAIL", "interrupted")],
                      reference={"val_acc": 0.0, "energy_uj": 20.0}, history=[5.0, 9.0])
    assert view.counts == {"complete": 2, "pruned": 1, "failed": 1}
    lines = out.getvalue().splitlines()
    # Lines of trials the study had already reported show the study's count, never more.
    assert [line.split("done ")[-1] for line in lines] == ["1/4", "3/4", "3/4", "4/4"]


def test_without_a_terminal_every_event_is_one_line_and_the_start_says_where_to_look() -> None:
    out = io.StringIO()
    view = LiveView("s", total_trials=2, objectives=OBJECTIVES, stream=out, live=False, root="runs", epochs=3)
    view.trial_started(0, {"width": 16}, attrs={})
    view.trial_epoch(0, {"val_acc": 0.8, "energy_uj": 2.5, "train_loss": 0.7}, step=1)
    view.update_front([_record(0, "COMPLETE")], reference={"val_acc": 0.0, "energy_uj": 20.0}, history=[4.0])
    view.trial_finished(0, "complete", final_metrics={"val_acc": 0.5, "energy_uj": 10.0})
    lines = out.getvalue().splitlines()
    assert lines[0] == ("search s: results in runs/s; browse them with: nas ui --root runs   |   "
                        "nas dashboard s --root runs")
    assert lines[1].startswith("starting Ray")
    assert lines[2].endswith("trial 0 started (width=16)")
    assert lines[3].endswith("trial 0 epoch 1/3 val_acc=0.8 energy_uj=2.5 train_loss=0.7")
    assert lines[4].endswith("trial 0 complete val_acc=0.5000 energy_uj=10  hypervolume 0.2000  done 1/2")
    assert len(lines) == 5


def test_the_panel_has_a_progress_bar_the_running_trials_and_the_hypervolume() -> None:
    from rich.console import Console

    view = LiveView("s", total_trials=4, objectives=OBJECTIVES, stream=io.StringIO(), live=False, epochs=3,
                    records=[_record(0, "COMPLETE")])  # a resume: trial 0 finished in an earlier run
    view.trial_started(1, {"width": 16}, attrs={})
    view.trial_epoch(1, {"val_acc": 0.875, "energy_uj": 2.5}, step=2)
    view.update_front([_record(0, "COMPLETE"), _record(2, "PRUNED")], reference={"val_acc": 0.0, "energy_uj": 20.0},
                      history=[10.0])
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(view._render())
    text = console.export_text()
    assert "2/4 trials" in text and "━" in text  # the bar
    assert "left" in text and "elapsed" in text
    running = next(line for line in text.splitlines() if line.strip().startswith("│ 1") or " 1 " in line
                   and "2/3" in line)
    assert "2/3" in running and "0.875" in running and "2.5" in running
    assert "hypervolume 0.5000 of the reference box" in text
    assert view.eta_seconds() is not None  # one trial finished in this run: a pace to go by
