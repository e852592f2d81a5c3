"""The failover timeline read from synthetic runs: which event ends which stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from run_builder import CRASH_AT, crash_spec, make_record

from workloads.failover import STAGES, by_label, failover_section, timelines
from workloads.failover_plot import draw_failover_timeline
from workloads.results import RunRecord, read_run, write_run


def event(t: float, node: str, kind: str, term: int, **extra: Any) -> dict[str, Any]:
    return {"t": t, "node": node, "kind": kind, "term": term, "detail": "", **extra}


# n1 leads term 1 and crashes at 5.0 (run_builder's story). n3's timer fires first but its
# pre-vote fails; n2 then wins term 2, catches up and commits; after n1's restart at 9.0 a
# later election (term 3) belongs to no scored fault.
PULL_EVENTS = [
    event(0.5, "n1", "elected", 1),
    event(CRASH_AT + 1.000, "n3", "pre-vote", 2, last_contact=CRASH_AT - 0.02),
    event(CRASH_AT + 1.100, "n2", "pre-vote", 2, last_contact=CRASH_AT - 0.01),
    event(CRASH_AT + 1.101, "n2", "candidate", 2, last_contact=CRASH_AT - 0.01),
    event(CRASH_AT + 1.102, "n2", "elected", 2),
    event(CRASH_AT + 1.102, "n2", "catchup-start", 2),
    event(CRASH_AT + 1.103, "n3", "leader-learned", 2),
    event(CRASH_AT + 1.104, "n2", "catchup-end", 2),
    event(CRASH_AT + 1.150, "n2", "term-committed", 2),
    event(9.6, "n1", "elected", 3),
]


def pull_record(trial: int = 0) -> RunRecord:
    record = make_record(crash_spec(label="pull", trial=trial))
    record.events = [dict(e) for e in PULL_EVENTS]
    return record


def push_record(trial: int = 0) -> RunRecord:
    record = make_record(crash_spec(label="push", trial=trial))
    record.events = [
        dict(e)
        for e in PULL_EVENTS
        if e["kind"] not in ("catchup-start", "catchup-end") and e["node"] != "n3"
    ]
    return record


def test_milestones_come_from_the_events_of_the_fault_window() -> None:
    (line,) = timelines(pull_record())
    assert line.old_leader == "n1"
    assert (line.new_leader, line.new_term) == ("n2", 2)
    assert line.candidate == pytest.approx(1.000)  # n3's failed pre-vote started first
    assert line.last_contact == pytest.approx(-0.02)  # the first candidate's last contact
    assert line.elected == pytest.approx(1.102)  # not term 3's election after the restart
    assert line.catchup_start == pytest.approx(1.102)
    assert line.catchup_end == pytest.approx(1.104)
    assert line.catchup == pytest.approx(0.002)
    assert line.committed == pytest.approx(1.150)
    # The outage ends at 6.5: op 650 (a write, invoked 6.505, 1 ms) is the first ack after it.
    assert line.first_ack == pytest.approx(1.506)
    assert line.rate_back == pytest.approx(1.5)
    assert line.recovered


def test_stages_partition_the_time_to_the_last_milestone() -> None:
    (line,) = timelines(pull_record())
    stages = line.stages()
    assert list(stages) == [stage for _, stage in STAGES]
    assert stages["fault lands"] == 0.0  # last contact before the fault: it landed at once
    assert stages["election timer"] == pytest.approx(1.000)
    assert stages["vote"] == pytest.approx(0.102)
    assert stages["catch-up"] == pytest.approx(0.002)
    assert stages["first commit"] == pytest.approx(0.046)
    assert stages["clients reach leader"] == pytest.approx(0.356)
    # The rate's 100 ms bins may place "back" before the first ack: that stage is 0 long, not
    # negative, and the stages add up to the latest milestone (the first ack, 1.506 s).
    assert stages["rate to 50%"] == 0.0
    assert sum(v for v in stages.values() if v is not None) == pytest.approx(1.506)


def test_a_fault_that_lands_late_shows_as_its_own_stage() -> None:
    record = pull_record()
    for e in record.events:
        if e.get("last_contact") is not None:
            e["last_contact"] = CRASH_AT + 0.3  # the kill took 0.3 s to take effect
    (line,) = timelines(record)
    assert line.landed == pytest.approx(0.3)
    assert line.stages()["fault lands"] == pytest.approx(0.3)
    assert line.stages()["election timer"] == pytest.approx(0.7)
    # Counted from the landing, the 0.3 s the fault took to take effect is left out.
    assert line.rate_back == pytest.approx(1.5)
    assert line.back_after_landing == pytest.approx(1.2)


def test_push_has_no_catch_up_stage() -> None:
    (line,) = timelines(push_record())
    assert line.catchup_start is None
    assert line.catchup_end == line.elected
    assert line.stages()["catch-up"] == 0.0
    assert line.candidate == pytest.approx(1.100)


def test_a_run_without_events_keeps_only_the_rate() -> None:
    record = make_record(crash_spec(label="pull"))
    (line,) = timelines(record)
    assert line.old_leader == "n1"  # from the samples
    assert line.candidate is None and line.elected is None and line.committed is None
    assert line.rate_back == pytest.approx(1.5)
    assert line.back_after_landing == pytest.approx(1.5)  # no landing known: from the fault
    assert line.stages()["vote"] is None


def test_events_survive_the_run_folder(tmp_path: Path) -> None:
    folder = write_run(pull_record(), tmp_path, "run")
    assert read_run(folder).events == PULL_EVENTS
    (line,) = timelines(read_run(folder))
    assert line.committed == pytest.approx(1.150)


def test_section_has_a_row_per_label_and_the_ratio_against_push() -> None:
    records = [make(trial) for trial in range(3) for make in (push_record, pull_record)]
    groups = by_label(records)
    assert list(groups) == [("leader-crash", "push"), ("leader-crash", "pull")]
    text = failover_section(records, figure="failover.png")
    rows = [row for row in text.splitlines() if row.startswith("| leader-crash")]
    assert [row.split("|")[2].strip() for row in rows] == ["push", "pull"]
    assert rows[1].rstrip(" |").endswith("1.00x [1.00, 1.00]")  # same outage in both
    too_few = failover_section(records[:4])  # 2 faults a side: no interval is printed
    assert next(r for r in too_few.splitlines() if "| pull |" in r).rstrip(" |").endswith("1.00x")
    assert "![failover timeline](failover.png)" in text
    assert "leader-crash pull: 2.0 ms" in text  # the catch-up median


def test_section_is_empty_without_faults() -> None:
    record = make_record(crash_spec(faults=[]))
    assert failover_section([record]) == ""


def test_plot_draws_a_file_per_scenario(tmp_path: Path) -> None:
    groups = by_label([push_record(), pull_record()])
    lines = {label: group for (_, label), group in groups.items()}
    path = draw_failover_timeline("leader-crash", lines, tmp_path / "failover.png")
    assert path is not None and path.stat().st_size > 0
    assert draw_failover_timeline("leader-crash", {}, tmp_path / "none.png") is None
