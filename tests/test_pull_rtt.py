"""Pull on capped pipes: the round trip the sync-source policies compare is distance, not load.

Issue 12's geo-bandwidth runs (real engine, 64 clients) put the chained labels at 0.68-0.98 of
their ceiling. Members lagging by seconds were those whose source sent two copies through one
capped pipe, and the trees got there by `closer-member` changes: a probe and its reply queued
behind the bulk data a source streams through its pipe (up to a send horizon), so a busy source
looked hundreds of ms further away than an idle member, even one in another region. Pullers
left it for the idle one, whose pipe then filled, until the change budget ran out with two
copies through one pipe. Probes are now timed without the wait in either end's pipes
(`PullEngine._queued_ahead`). These tests run the geo-bandwidth scenario in the simulator (the
same `SerialPipes` schedule as the real shaper) and check behaviour, never wall-clock time.
"""

from __future__ import annotations

import dataclasses

import pytest

from cluster.sim.simulator import Simulator
from protocols.messages import Envelope, StatusProbe
from protocols.types import NodeId
from workloads.scenario import Scenario, load_scenario
from workloads.sim_driver import sim_config

LOADED_SECONDS = 3.0  # of the scenario's measured load after its warm-up
MARGIN = 0.02  # s: jitter both ways (2 x 1 ms) and the engines' own step timing, with room


@dataclasses.dataclass
class ProbedRun:
    sim: Simulator
    scenario: Scenario
    probes: list[tuple[float, Envelope]]  # (arrival time, probe) of every StatusProbe

    def round_trip(self, a: NodeId, b: NodeId) -> float:
        """The configured round trip between two members (the latency matrix, both ways)."""
        delays = self.sim.config.links
        return delays[(a, b)][0] + delays[(b, a)][0]


def run_geo(policy: str, seed: int = 1) -> ProbedRun:
    scenario = load_scenario("geo-bandwidth")
    load_from = scenario.timing.warmup
    config = dataclasses.replace(
        sim_config(scenario, "pull", policy, seed), duration=load_from + LOADED_SECONDS
    )
    sim = Simulator(config)
    probes: list[tuple[float, Envelope]] = []
    arrivals = sim.network.arrivals

    def recording(envelope: Envelope, now: float) -> list[float]:
        if isinstance(envelope.message, StatusProbe) and now >= load_from:
            probes.append((now, envelope))
        return arrivals(envelope, now)

    sim.network.arrivals = recording  # type: ignore[method-assign]
    sim.run()
    return ProbedRun(sim, scenario, probes)


@pytest.fixture(scope="module", params=["nearest", "spread"])
def geo_run(request: pytest.FixtureRequest) -> ProbedRun:
    return run_geo(request.param)


def test_the_sources_pipes_really_are_loaded(geo_run: ProbedRun) -> None:
    """The premise: under this load the sources keep data queued in their capped pipes."""
    cut = sum(
        engine.stats.batches_cut
        for node in geo_run.sim.nodes.values()
        if (engine := node.engine) is not None and hasattr(engine, "stats")
    )
    assert cut > 0


def test_probes_carry_the_round_trip_of_the_links_not_the_queue(geo_run: ProbedRun) -> None:
    """Every RTT a member measured and shared while its pipes were loaded is the link's own
    round trip (it was up to a send horizon more: 0.2 s here)."""
    measured = [
        (envelope.src, envelope.dst, envelope.message.rtt)
        for _, envelope in geo_run.probes
        if isinstance(envelope.message, StatusProbe) and envelope.message.rtt is not None
    ]
    assert measured
    far = [
        (src, dst, rtt) for src, dst, rtt in measured if rtt > geo_run.round_trip(src, dst) + MARGIN
    ]
    assert far == []


def test_no_source_is_left_for_a_closer_member_under_load(geo_run: ProbedRun) -> None:
    """Distances do not change under load, so neither does a `closer-member` choice."""
    load_from = geo_run.scenario.timing.warmup
    changes = [
        (node, event.detail)
        for node, event in geo_run.sim.protocol_events
        if event.t >= load_from and "closer-member" in event.detail
    ]
    assert changes == []
