"""The live view's counts when the study runs ahead of the finished-trial events (plain-text mode)."""

from __future__ import annotations

import io

from nas.search.progress import LiveView
from nas.search.records import TrialRecord

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
