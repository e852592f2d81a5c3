"""Run a scenario on the deterministic simulator (`--engine sim`) and record it like a real run.

The simulator has no CPU or disk contention: it measures protocol-level costs (messages, bytes
per link, latency in virtual time against the physical floor of the latency matrix), which is
what lets large or geo-distributed setups be explored without the hardware. The records it
writes have the same shape as the real driver's, so `summary` and `report` treat both alike;
CPU figures are absent (null) rather than invented.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from cluster.sim.clients import ClientSettings
from cluster.sim.nemesis import LEADER, Action, Fault
from cluster.sim.simulator import SimConfig, Simulator
from protocols.config import SyncSettings
from workloads.catchup import METADATA_KEY
from workloads.results import FaultRecord, OpRecord, RunRecord, run_metadata
from workloads.scenario import UNDO, FaultAction, FaultSpec, Scenario
from workloads.sim_load import WorkloadLoad, op_record
from workloads.sim_membership import SimMembership

LAN_ONE_WAY = 0.0001  # 100 µs: the simulator's stand-in for a same-datacentre link
LAN_JITTER = 0.00002
FSYNC_LATENCY = 0.00025  # median of a small fsync measured on this kind of machine (DESIGN.md)


def scenario_faults(scenario: Scenario) -> list[Fault]:
    """The scenario's fault schedule in the simulator's terms (times include the warm-up)."""
    faults: list[Fault] = []
    offset = scenario.timing.warmup
    for ref, spec in enumerate(scenario.faults, start=1):
        if spec.is_membership:  # driven by SimMembership, which watches what follows
            continue
        faults.extend(
            dataclasses.replace(fault, ref=ref)
            for fault in _convert(spec, spec.at + offset, undo=False)
        )
        if spec.duration is not None:
            faults.extend(
                dataclasses.replace(fault, ref=ref)
                for fault in _convert(spec, spec.at + offset + spec.duration, undo=True)
            )
    faults.sort(key=lambda fault: fault.time)
    return faults


def _convert(spec: FaultSpec, at: float, undo: bool) -> list[Fault]:
    action = UNDO[spec.action] if undo else spec.action
    node = spec.node or ""
    match action:
        case FaultAction.CRASH:
            return [Fault(at, Action.CRASH, (node,))]
        case FaultAction.RESTART:
            return [Fault(at, Action.RESTART, (node,))]
        case FaultAction.PAUSE:
            return [Fault(at, Action.PAUSE, (node,))]
        case FaultAction.RESUME:
            return [Fault(at, Action.RESUME, (node,))]
        case FaultAction.HEAL:
            return [Fault(at, Action.HEAL)]
        case FaultAction.PARTITION:
            groups = spec.groups or ((node,),)  # a node alone: cut it off from the rest
            kind = Action.ONE_WAY if spec.one_way else Action.PARTITION
            return [Fault(at, kind, groups=groups)]
        case FaultAction.SLOW_LINK:
            peers = (spec.peer,) if spec.peer else ()
            scale = 0.0 if undo else 1.0
            return [
                Fault(
                    at,
                    Action.SLOW_LINK,
                    (node, *peers),
                    delay=scale * spec.delay_ms / 1000,
                    jitter=scale * spec.jitter_ms / 1000,
                    loss=scale * spec.loss,
                )
            ]
        case FaultAction.SLOW_DISK:
            delay = 0.0 if undo else spec.delay_ms / 1000
            return [Fault(at, Action.SLOW_DISK, (node,), delay=delay)]
    raise AssertionError(f"unhandled fault action {action}")


def sim_config(scenario: Scenario, protocol: str, policy: str | None, seed: int) -> SimConfig:
    timing = scenario.timing
    links = {
        link: (max(delay, LAN_ONE_WAY), jitter, loss)
        for link, (delay, jitter, loss) in scenario.one_way_delays().items()
    }
    election = scenario.election_timeout
    overrides: dict[str, Any] = {
        "sync": SyncSettings(
            policy=policy or scenario.sync_policy, max_pullers=scenario.max_pullers
        ),
    }
    if scenario.priorities:
        overrides["priorities"] = scenario.priorities
    overrides["snapshot_entries"] = scenario.snapshot_entries
    overrides["snapshot_bytes"] = scenario.snapshot_bytes
    return SimConfig(
        protocol=protocol,
        nodes=scenario.nodes,
        seed=seed,
        duration=timing.warmup + timing.duration,
        faults="none",
        election_timeout=election,
        heartbeat_interval=scenario.heartbeat_interval,
        one_way_delay=LAN_ONE_WAY,
        links=links,
        jitter=LAN_JITTER,
        loss=0.0,
        duplicate=0.0,
        disk_latency=FSYNC_LATENCY if scenario.fsync == "always" else 0.00001,
        crash_after_vote=0.0,
        client_delay=LAN_ONE_WAY,
        client_settings=ClientSettings(
            think_time=0.0, attempt_timeout=max(0.5, election), op_timeout=3 * election + 2.0
        ),
        config_overrides=overrides,
        regions=scenario.regions,
        faults_scripted=tuple(scenario_faults(scenario)),
        workload=WorkloadLoad(scenario.workload),
        sample_interval=0.1,
        settle=timing.cooldown,
        fifo_links=True,  # the real transport runs over TCP: links never reorder
        egress=scenario.egress_caps(),
        voters=len(scenario.initial_voters),
    )


def run_sim(
    scenario: Scenario,
    protocol: str,
    policy: str | None,
    seed: int,
    trial: int,
    label: str,
    command: str,
) -> RunRecord:
    """Simulate one trial and return its record (not yet written)."""
    config = sim_config(scenario, protocol, policy, seed)
    started = time.time()
    wall = time.perf_counter()
    sim = Simulator(config)
    sim.start()
    membership = SimMembership(sim, scenario) if scenario.changes_membership else None
    run_until = membership.run_until if membership is not None else sim.run_until
    window = (scenario.timing.warmup, scenario.timing.warmup + scenario.timing.duration)
    run_until(window[0])
    before = {link: (s.bytes, s.messages) for link, s in sim.network.stats.items()}
    leader_before = dict(sim.leader_time)
    run_until(window[1])
    after = {link: (s.bytes, s.messages) for link, s in sim.network.stats.items()}
    leader_during = {
        n: sim.leader_time.get(n, 0.0) - leader_before.get(n, 0.0) for n in sim.node_ids
    }
    run_until(sim.end_time)
    sim.finish()
    links = []
    sent: dict[str, int] = dict.fromkeys(sim.node_ids, 0)
    received: dict[str, int] = dict.fromkeys(sim.node_ids, 0)
    for (src, dst), (total_bytes, total_messages) in sorted(after.items()):
        bytes0, messages0 = before.get((src, dst), (0, 0))
        links.append(
            {
                "src": src,
                "dst": dst,
                "bytes": total_bytes - bytes0,
                "messages": total_messages - messages0,
            }
        )
        sent[src] += total_bytes - bytes0
        received[dst] += total_bytes - bytes0
    regions = {node: scenario.region_of(node) for node in sim.node_ids}
    ops: list[OpRecord] = [op_record(op) for client in sim.clients for op in client.ops]
    ops.sort(key=lambda op: op.invoke)
    nodes = {
        node: {
            "region": regions[node],
            "cpu_seconds": None,
            "bytes_sent": sent[node],
            "bytes_received": received[node],
            "leader_time": round(leader_during[node], 6),
        }
        for node in sim.node_ids
    }
    faults = [_fault_record(t, text) for t, text in sim.fault_log if "leads term" not in text]
    metadata = run_metadata(
        scenario,
        protocol=protocol,
        policy=policy,
        label=label,
        engine="sim",
        seed=seed,
        trial=trial,
        command=command,
        started=started,
        wall_seconds=time.perf_counter() - wall,
        window=window,
    )
    if membership is not None:
        metadata[METADATA_KEY] = membership.metadata()
    metadata |= {
        "driver": {"kind": "simulated clients", "processes": None, "cpu_share": None},
        "final_state": _final_state(sim),
        "sim": {
            "violations": [str(v) for v in sim.violations],
            "events": sim.stats.events,
            "virtual_seconds": sim.now,
            "elections": sim.stats.elections_won,
            "leader_changes": [
                {"t": t, "event": text} for t, text in sim.fault_log if "leads term" in text
            ],
        },
    }
    return RunRecord(
        metadata=metadata,
        ops=ops,
        timeseries=sim.samples,
        links=links,
        regions=regions,
        nodes=nodes,
        faults=faults,
        events=[
            {"node": node, **event.as_dict()}
            for node, event in sorted(sim.protocol_events, key=lambda item: item[1].t)
        ],
    )


def _fault_record(t: float, text: str) -> FaultRecord:
    kind, _, rest = text.partition(" ")
    nodes = tuple(
        part for part in rest.replace("|", " ").replace(",", " ").split() if part[:1] == "n"
    )
    return FaultRecord(t, kind, nodes, text)


def _final_state(sim: Simulator) -> dict[str, str | None]:
    """The state machine of the live node that applied the most (after the cool-down)."""
    engines = [node.engine for node in sim.nodes.values() if node.engine is not None]
    if not engines:
        return {}
    best = max(engines, key=lambda engine: engine.status().applied)
    snapshot = getattr(best, "kv", None)
    return dict(snapshot.snapshot()) if snapshot is not None else {}


__all__ = ["LEADER", "run_sim", "scenario_faults", "sim_config"]
