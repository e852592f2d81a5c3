"""Pull on capped pipes: a source feels its pipes' back-pressure and never floods them.

Before, a source streamed everything it had the moment it had it; on a capped uplink that built
a queue seconds long, its long-poll answers and heartbeats waited behind it, pullers timed out
and pulled the same range again (which the source queued again), and the primary lost its
term: `leader-uplink` with 128 clients fell from ~120 to a few writes/s, with over 100 KB sent
per committed 4 KiB write. These tests run that in the simulator (the same `SerialPipes`
schedule as the real shaper) and check behaviour, never wall-clock time.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Hashable

import pytest

from cluster.shaper import EgressCaps, LinkShaper
from cluster.sim.harness import Harness
from cluster.sim.network import SimNetwork
from cluster.sim.simulator import SimConfig, Simulator
from protocols.egress import PipeLoad
from protocols.engine import ClientRequest
from protocols.messages import Envelope, PullRequest, PullResponse
from protocols.pull import PullEngine
from protocols.replica import ReplicaBase
from protocols.types import Command, Entry, NodeId, Op
from raftbench.commands.sim import sync_settings
from workloads.ceiling import bytes_per_copy
from workloads.scenario import Scenario, load_scenario
from workloads.sim_driver import sim_config
from workloads.sim_load import correctness_workload
from workloads.sim_runner import run_seed

LOAD_SECONDS = 6.0


def overloaded_uplink(clients: int = 128) -> Scenario:
    """`leader-uplink` with twice its clients: far more writes in flight than the pipe carries."""
    scenario = load_scenario("leader-uplink")
    return dataclasses.replace(
        scenario, workload=dataclasses.replace(scenario.workload, clients=clients)
    )


@dataclasses.dataclass
class CappedRun:
    sim: Simulator
    scenario: Scenario
    sent: Counter[tuple[NodeId, NodeId, int, int]]  # (source, puller, term, index) -> times

    def engines(self) -> list[PullEngine]:
        engines = [node.engine for node in self.sim.nodes.values()]
        assert all(isinstance(engine, PullEngine) for engine in engines)
        return [engine for engine in engines if isinstance(engine, PullEngine)]

    def committed(self) -> int:
        return max(engine.commit_index for engine in self.engines())

    def busiest_sender_bytes(self) -> int:
        sent: Counter[NodeId] = Counter()
        for (src, _dst), stats in self.sim.network.stats.items():
            sent[src] += stats.bytes
        return max(sent.values())


def run_capped(policy: str, seed: int = 1) -> CappedRun:
    scenario = overloaded_uplink()
    config = dataclasses.replace(sim_config(scenario, "pull", policy, seed), duration=LOAD_SECONDS)
    sim = Simulator(config)
    sent: Counter[tuple[NodeId, NodeId, int, int]] = Counter()
    arrivals = sim.network.arrivals

    def recording(envelope: Envelope, now: float) -> list[float]:
        message = envelope.message
        if isinstance(message, PullResponse):
            for entry in message.entries:
                sent[(envelope.src, envelope.dst, entry.term, entry.index)] += 1
        return arrivals(envelope, now)

    sim.network.arrivals = recording  # type: ignore[method-assign]
    sim.run()
    return CappedRun(sim, scenario, sent)


@pytest.fixture(scope="module")
def primary_run() -> CappedRun:
    return run_capped("primary")


def test_no_puller_times_out_and_the_primary_keeps_its_term(primary_run: CappedRun) -> None:
    engines = primary_run.engines()
    assert sum(engine.stats.pulls_timed_out for engine in engines) == 0
    assert sum(engine.stats.source_changes for engine in engines) == len(engines) - 1
    assert {engine.term for engine in engines} == {1}


def test_no_entry_is_sent_twice_to_the_same_puller(primary_run: CappedRun) -> None:
    # Nobody changed source (checked above): a repeat can only be a range pulled again while
    # the first copy was still in flight.
    assert primary_run.sent, "the run replicated nothing"
    repeated = {key: times for key, times in primary_run.sent.items() if times > 1}
    assert repeated == {}


def test_bytes_per_committed_write_stay_near_one_copy_per_puller(primary_run: CappedRun) -> None:
    copies = primary_run.scenario.nodes - 1  # `primary`: every secondary pulls from it
    per_write = primary_run.busiest_sender_bytes() / primary_run.committed()
    assert per_write <= 1.25 * copies * bytes_per_copy(primary_run.scenario)


def test_throughput_stays_near_the_pipe_ceiling(primary_run: CappedRun) -> None:
    scenario = primary_run.scenario
    cap = scenario.egress_caps()["n1"].total
    assert cap is not None
    ceiling = cap / ((scenario.nodes - 1) * bytes_per_copy(scenario))  # writes per second
    assert primary_run.committed() >= 0.8 * ceiling * LOAD_SECONDS


def test_a_chained_tree_uses_its_pipes_once_per_copy() -> None:
    run = run_capped("spread")
    engines = run.engines()
    assert sum(engine.stats.pulls_timed_out for engine in engines) == 0
    # Members may change source here (a stream cancelled in flight is sent again by the next
    # source, so no check for repeats); still no node sends more than the 2 copies of a write
    # that `spread` allows per source, plus a little.
    per_write = run.busiest_sender_bytes() / run.committed()
    assert per_write <= 1.25 * 2 * bytes_per_copy(run.scenario)


# ---- the gauge: what the runtime tells the engine -------------------------------------------


def test_the_real_shaper_and_the_simulator_report_the_same_pipe_loads() -> None:
    caps = EgressCaps(total=1000.0, pipes={"far": 500.0}, pipe_of={"b": "far"})
    shaper = LinkShaper(random.Random(1), egress=caps)
    network = SimNetwork(random.Random(1), {}, 0.0, egress={"a": caps})
    assert shaper.pipe_loads("b", 0.0) == network.pipe_loads("a", "b", 0.0)
    shaper.schedule("b", 250, 0.0)  # 0.25 s of the uplink, 0.5 s of the far pipe
    network._pipes["a"].pass_through(caps.path("b"), 250, 0.0)
    expected: list[tuple[Hashable, float, float]] = [
        (("pipe", "far"), 0.5, 500.0),
        (("total",), 0.25, 1000.0),
    ]
    assert [tuple(load) for load in shaper.pipe_loads("b", 0.0)] == expected
    assert shaper.pipe_loads("b", 0.0) == network.pipe_loads("a", "b", 0.0)
    # Draining: at 0.3 s only the far pipe still holds bytes; a peer outside it sees the uplink.
    assert shaper.pipe_loads("b", 0.3)[1] == PipeLoad(("total",), 0.0, 1000.0)
    (load,) = shaper.pipe_loads("c", 0.1)
    assert (load.key, load.rate) == (("total",), 1000.0) and load.queued == pytest.approx(0.15)


def test_an_uncapped_node_reports_no_pipes() -> None:
    shaper = LinkShaper(random.Random(1))
    assert shaper.pipe_loads("b", 0.0) == []
    assert SimNetwork(random.Random(1), {}, 0.0).pipe_loads("a", "b", 0.0) == []


# ---- safety and liveness under faults, with every node's uplink capped ------------------------

CAPPED_FAULT_SEEDS = 8  # per policy in CI; 100 per policy by hand (-m slow)
FAULT_UPLINK = 30_000.0  # bytes/s: the correctness workload fills it, so sources hold back


def capped_fault_config(policy: str, seed: int) -> SimConfig:
    config = SimConfig(
        protocol="pull",
        seed=seed,
        faults="all",
        duration=4.0,
        config_overrides={"sync": sync_settings(policy, 5, 2)},
        egress={f"n{i}": EgressCaps(total=FAULT_UPLINK) for i in range(1, 6)},
    )
    return dataclasses.replace(config, workload=correctness_workload(config.clients))


def test_the_capped_fault_runs_really_hold_sources_back() -> None:
    sim = Simulator(capped_fault_config("primary", 0))
    sim.run()
    engines = [node.engine for node in sim.nodes.values() if isinstance(node.engine, PullEngine)]
    assert sum(engine.stats.batches_cut for engine in engines) > 0


def capped_fault_sweep(policy: str, seeds: range) -> None:
    failures = []
    completed = 0
    for seed in seeds:
        config = capped_fault_config(policy, seed)
        result = run_seed(config)
        completed += result.ops_ok + result.ops_fail
        if result.failed:
            failures.append((seed, result.violations[:3], result.verdict))  # capped_fault_config
    assert not failures, failures[:5]
    assert completed > len(seeds) * 30  # the clients really did work under the faults and caps


@pytest.mark.parametrize("policy", ["primary", "nearest", "spread"])
def test_capped_sources_stay_safe_and_live_under_all_faults(policy: str) -> None:
    capped_fault_sweep(policy, range(CAPPED_FAULT_SEEDS))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["primary", "nearest", "spread"])
def test_capped_sources_stay_safe_under_all_faults_100_seeds(policy: str) -> None:
    capped_fault_sweep(policy, range(100))


# ---- the source's rules, one at a time (a gauge the test sets by hand) -------------------------


@dataclasses.dataclass
class FixedGauge:
    """One uplink whose load the test sets; it does not see what the engine sends."""

    queued: float = 0.0
    rate: float = 10_000.0  # bytes/s: 1,000 bytes of room in a 0.1 s horizon

    def pipe_loads(self, dst: NodeId, now: float) -> list[PipeLoad]:
        return [PipeLoad(("total",), self.queued, self.rate)]


def streaming_primary(gauge: FixedGauge) -> tuple[Harness, PullEngine]:
    """n1 leads; its secondaries are down and n2's stream is played by hand."""
    h = Harness.create("pull", nodes=3, check_quorum=False, heartbeat_interval=0.1)
    h.elect("n1")
    h.settle(0.5)
    for node in ("n2", "n3"):
        h.crash(node)
    primary = h["n1"]
    assert isinstance(primary, PullEngine)
    primary.egress_gauge = gauge
    h.inflight.clear()
    last = primary.log.last_position
    request = PullRequest(
        primary.term,
        last.index,
        last.term,
        1,
        last_index=last.index,
        last_term=last.term,
        stream=True,
    )
    h.do("n1", lambda e: e.receive(Envelope("n2", "n1", request), h.now))
    assert h.messages(PullResponse) == []  # held: nothing new yet
    return h, primary


def batches(h: Harness) -> list[tuple[Entry, ...]]:
    return [s.message.entries for s in h.messages(PullResponse, src="n1") if s.dst == "n2"]


def test_a_full_pipe_holds_the_stream_until_it_drains() -> None:
    gauge = FixedGauge(queued=0.1)  # a whole horizon already queued
    h, _ = streaming_primary(gauge)
    h.put("n1", "k", "v" * 100)
    assert batches(h) == []
    gauge.queued = 0.0
    h.advance_time(0.1 / 4, ["n1"])  # the source looks again a quarter horizon later
    assert [len(batch) for batch in batches(h)] == [1]


def test_a_long_poll_answer_to_a_full_pipe_carries_no_entries() -> None:
    h, primary = streaming_primary(FixedGauge(queued=0.1))
    h.put("n1", "k", "v" * 100)
    h.advance_time(primary.config.long_poll_timeout, ["n1"])
    assert batches(h) == [()]  # the puller hears from its source; the pipe gets nothing
    assert primary.stats.batches_cut >= 1


def propose_six(h: Harness) -> None:
    """Six 300-byte writes appended in one step, so one flush finds them all."""
    commands = [Command(Op.PUT, f"k{i}", "v" * 300) for i in range(6)]

    def append_all(engine: ReplicaBase) -> None:
        for i, command in enumerate(commands):
            engine.propose(ClientRequest(100 + i, command), h.now)

    h.do("n1", append_all)


def test_batches_fit_the_room_the_pipe_has() -> None:
    h, _ = streaming_primary(FixedGauge(queued=0.0))
    propose_six(h)
    sent = batches(h)
    assert sum(len(batch) for batch in sent) == 6  # the fixed gauge never fills: all go out
    room = 0.1 * 10_000
    for batch in sent:
        assert sum(e.command.payload_size() for e in batch) <= room
    assert len(sent) > 1  # cut to the room, not one batch of all six


def test_an_uncapped_source_sends_everything_in_one_batch() -> None:
    h, primary = streaming_primary(FixedGauge())
    primary.egress_gauge = None
    propose_six(h)
    assert [len(batch) for batch in batches(h)] == [6]
    assert primary.stats.batches_cut == 0
