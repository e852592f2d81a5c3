"""Sync-source selection at work in the simulator, on the geo scenario (6 nodes, 3 regions).

us-east holds n1 (the primary, by priority) and n2; us-west n3, n4; eu-west n5, n6. One-way
delays: us-east to us-west 35 ms, to eu-west 40 ms, us-west to eu-west 70 ms.
"""

from __future__ import annotations

from cluster.sim.nemesis import Action, Fault
from cluster.sim.simulator import Simulator
from protocols.config import SyncSettings
from protocols.pull import PullEngine
from workloads.scenario import Scenario, load_scenario
from workloads.sim_driver import sim_config

GEO = load_scenario("geo")
ELECTION = GEO.election_timeout


def simulator(policy: str, scenario: Scenario = GEO, seed: int = 1) -> Simulator:
    config = sim_config(scenario, "pull", policy, seed)
    config.faults_scripted = ()
    sim = Simulator(config)
    sim.start()
    return sim


def sources(sim: Simulator) -> dict[str, str | None]:
    return {n: node.engine.sync_source for n, node in sim.nodes.items() if node.engine}


def pull_engine(sim: Simulator, node: str) -> PullEngine:
    engine = sim.nodes[node].engine
    assert isinstance(engine, PullEngine)
    return engine


def test_nearest_chains_one_cross_region_puller_per_remote_region() -> None:
    sim = simulator("nearest")
    sim.run_until(10.0)
    assert sim.leader_now() == "n1"
    chosen = sources(sim)
    for region in ("us-west", "eu-west"):
        members = [n for n in sim.node_ids if GEO.region_of(n) == region]
        crossing = [n for n in members if GEO.region_of(chosen[n] or n) != region]
        assert len(crossing) == 1, (region, chosen)
        (gateway,) = crossing
        assert all(chosen[n] == gateway for n in members if n != gateway), chosen


def test_primary_policy_pulls_everything_from_the_primary() -> None:
    sim = simulator("primary")
    sim.run_until(10.0)
    assert sim.leader_now() == "n1"
    assert {n: s for n, s in sources(sim).items() if n != "n1"} == dict.fromkeys(
        ("n2", "n3", "n4", "n5", "n6"), "n1"
    )


def test_nearest_sends_one_copy_per_remote_region_across_regions() -> None:
    """The physical floor of cross-region traffic: each entry crosses to a region once."""
    sim = simulator("nearest")
    sim.run_until(8.0)
    before = {link: stats.bytes for link, stats in sim.network.stats.items()}
    committed_before = max(sim.invariants.committed)
    sim.run_until(14.0)
    committed = max(sim.invariants.committed) - committed_before
    from_primary = {
        dst: stats.bytes - before.get((src, dst), 0)
        for (src, dst), stats in sim.network.stats.items()
        if src == "n1"
    }
    # Entries go from n1 to n2 (same region) and one member of each remote region only.
    big = {dst for dst, sent in from_primary.items() if sent > 100 * committed}
    assert big == {"n2", "n3", "n5"}, from_primary


def test_a_dead_source_is_replaced_quickly_and_the_chained_member_keeps_up() -> None:
    sim = simulator("nearest")
    sim.run_until(10.0)
    chosen = sources(sim)
    assert chosen["n4"] == "n3"
    sim.inject(Fault(10.0, Action.CRASH, ("n3",)))
    sim.run_until(10.0 + 2 * ELECTION)
    assert sources(sim)["n4"] not in (None, "n3")
    # After re-selection n4 applies what the primary commits, within the same bound.
    leader_commit = sim.nodes["n1"].engine.commit_index  # type: ignore[union-attr]
    sim.run_until(10.0 + 4 * ELECTION)
    assert sim.nodes["n4"].engine.status().applied >= leader_commit  # type: ignore[union-attr]
    assert not sim.violations


def test_a_lagging_source_is_abandoned() -> None:
    """A source that keeps serving but falls behind the others by more than the lag limit."""
    config = sim_config(GEO, "pull", "nearest", 1)
    config.faults_scripted = ()
    # A lag limit small enough to trip on a slowed link (MongoDB's 30 s, unscaled, would need
    # a run of minutes); the rule is the same.
    config.config_overrides["sync"] = SyncSettings(
        policy="nearest", max_lag_seconds=0.1, scale_with_election_timeout=False
    )
    sim = Simulator(config)
    sim.start()
    sim.run_until(10.0)
    assert sources(sim)["n4"] == "n3"
    # n3's links to everyone but n4 now take 0.4 s longer: it still serves n4, late, and no
    # member is closer to it than another, so it has no reason to change its own source.
    sim.inject(Fault(10.0, Action.SLOW_LINK, ("n3", "n1", "n2", "n5", "n6"), delay=0.4))
    sim.run_until(10.0 + 3 * ELECTION)
    reasons = [why for _, _, why in pull_engine(sim, "n4").stats.history]
    assert "source-lagging" in reasons, reasons
    assert sources(sim)["n4"] != "n3"
    assert not sim.violations
