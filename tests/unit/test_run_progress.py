"""Progress people can watch, on plain data: the ETA reporters add, the artifact description a follower reads
back, and following a run's bars (the Prefect reads replaced by a scripted run)."""

from __future__ import annotations

from uuid import uuid4

from hybridops.flows.orchestration import run_control, run_progress
from hybridops.flows.orchestration.reporting import Progress, parse_progress_description, progress_description
from hybridops.flows.orchestration.run_control import RunInfo
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.story import Eta, duration_text


def test_eta_comes_from_the_rate_since_the_first_report() -> None:
    now = [100.0]
    eta = Eta(clock=lambda: now[0])
    assert eta.annotate("train", 1, 45, "loss 2.100") == "loss 2.100"  # no rate yet
    now[0] = 110.0
    assert eta.annotate("train", 3, 45, "loss 1.900") == "loss 1.900, ETA 3m30s"  # 2 steps in 10 s, 42 to go
    assert eta.annotate("eval base model", 0, 21) == ""  # each label has its own clock
    now[0] = 130.0
    assert eta.annotate("eval base model", 7, 21) == "ETA 40s"
    assert eta.annotate("train", 45, 45, "loss 0.2") == "loss 0.2"  # done: nothing left to estimate
    assert eta.annotate("documents", 5, None) == ""


def test_durations_read_short() -> None:
    assert [duration_text(s) for s in (0.4, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]


def test_a_description_reads_back_as_the_progress_it_describes() -> None:
    for progress in (Progress("train", 12, 45, "loss 1.234, ETA 3m05s"), Progress("eval v0003: x", 3, 21, ""),
                     Progress("documents", 4, None, "2 embedded")):
        assert parse_progress_description(progress_description(*progress)) == progress
    assert parse_progress_description("Reading the corpus") is None


def test_following_a_run_shows_each_bar_when_it_changes(monkeypatch) -> None:
    run_id = uuid4()
    script = [  # what each poll reads: the run's state and its progress artifacts
        ("RUNNING", []),
        ("RUNNING", [Progress("train", 1, 3, "loss 2.0")]),
        ("RUNNING", [Progress("train", 1, 3, "loss 2.0")]),
        ("RUNNING", [Progress("train", 3, 3, "loss 1.0"), Progress("eval v1", 2, 21, "ETA 1m00s")]),
        ("COMPLETED", [Progress("train", 3, 3, "loss 1.0"), Progress("eval v1", 21, 21, "")]),
    ]
    polls = iter(script)
    current: list = []

    def read_run(settings, rid):
        state, bars = next(polls)
        current[:] = bars
        return RunInfo(id=rid, name="brave-otter", state=state, url="http://ui/runs/x")

    monkeypatch.setattr(run_control, "read_run", read_run)
    monkeypatch.setattr(run_progress, "read_progress", lambda settings, rid: list(current))
    shown = []
    info = run_progress.follow_run(Settings(), run_id, lambda *bar: shown.append(bar), timeout=10, poll=0)
    assert info.state == "COMPLETED"
    assert shown == [("train", 1, 3, "loss 2.0"), ("train", 3, 3, "loss 1.0"), ("eval v1", 2, 21, "ETA 1m00s"),
                     ("eval v1", 21, 21, "")]
