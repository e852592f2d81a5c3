"""Say why etcd, measured elsewhere in a report, has no runs of one of its scenarios.

A multi-scenario report (the reference) runs etcd, the yardstick, only where it can take the
scenario as written; a reader who finds no etcd row in a scenario should learn why from the
report itself, not only from the README. (Other labels missing from a scenario need no note:
the bandwidth scenarios' extra pull policies, say, are simply not run elsewhere.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cluster.etcd import LOOPBACK_UNSUPPORTED
from workloads.real_driver import ETCD, settings_not_applied
from workloads.scenario import FaultAction, ScenarioError, parse_scenario


def etcd_absence_note(
    report_labels: Sequence[str], scenario_labels: Sequence[str], raw: Mapping[str, Any] | None
) -> str | None:
    """A sentence when the report has etcd runs but none of this scenario, else None.

    It names what of the scenario (`raw`, the parsed TOML its runs recorded) an etcd cluster
    on loopback could not take, which is why a report leaves etcd out there.
    """
    if ETCD not in report_labels or ETCD in scenario_labels:
        return None
    reasons = etcd_reasons(raw)
    if not reasons:
        return f"{ETCD} has no runs of this scenario in this report."
    return (
        f"{ETCD} did not run this scenario: on loopback it does not take all of it. "
        + "; ".join(reasons)
        + "."
    )


def etcd_reasons(raw: Mapping[str, Any] | None) -> list[str]:
    """What of the scenario an etcd target on loopback does not apply, as `what: why`."""
    if raw is None:
        return []
    try:
        scenario = parse_scenario(raw)
    except ScenarioError:
        return []
    reasons = dict(settings_not_applied(scenario, ETCD))
    for fault in scenario.faults:
        why = LOOPBACK_UNSUPPORTED.get(fault.action.value)
        # A heal only undoes a partition, which is named already.
        if why is not None and fault.action is not FaultAction.HEAL:
            reasons.setdefault(f"{fault.action.value} faults", why)
    return [f"{what}: {why}" for what, why in reasons.items()]
