"""Egress caps end to end: the files that express them, the simulator applying the very same
caps as the real link shaper, and the throughput ceiling computed from them."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from cluster.config import ConfigError, parse_cluster_config, write_cluster_config
from cluster.config import load_cluster_config as load_config
from cluster.shaper import EgressCaps, LinkShaper
from cluster.sim.network import SimNetwork
from protocols.codec import encoded_size
from protocols.messages import AppendEntries, Envelope
from protocols.types import Command, Entry, Op
from workloads.ceiling import (
    UPLINK,
    Pipe,
    bytes_per_copy,
    pipes_of,
    quorum_ceiling,
    run_ceiling,
    tree_depths,
)
from workloads.scenario import ScenarioError, load_scenario, parse_scenario
from workloads.sim_driver import run_sim

SECRET = "0123456789abcdef0123456789abcdef"


def cluster_document(**topology: Any) -> dict[str, Any]:
    regions = ["us", "us", "eu", "eu"]
    return {
        "cluster": {"secret": SECRET},
        "members": [
            {
                "id": f"n{i + 1}",
                "peer": f"127.0.0.1:{7001 + i}",
                "client": f"127.0.0.1:{8001 + i}",
                "region": region,
            }
            for i, region in enumerate(regions)
        ],
        "topology": topology,
    }


# ---- the cluster file --------------------------------------------------------------------------


def test_uplink_and_region_bandwidth_become_each_nodes_egress_caps(tmp_path: Path) -> None:
    document = cluster_document(
        egress_bytes_per_s=5e6,
        links=[
            {"from": "us", "to": "eu", "delay_ms": 40.0, "bandwidth": 1e6},
            {"from": "n1", "to": "n4", "delay_ms": 50.0, "bandwidth": 2e5, "one_way": True},
        ],
    )
    config = parse_cluster_config(document, Path("."))
    # n1: its share of the us->eu pipe for n3, a member rule of its own for n4
    assert config.egress_caps("n1") == EgressCaps(
        5e6, {"eu": 1e6, "n4": 2e5}, {"n3": "eu", "n4": "n4"}
    )
    # n4 -> n1: the one-way rule does not apply backwards; the region rule does
    assert config.egress_caps("n4") == EgressCaps(5e6, {"us": 1e6}, {"n1": "us", "n2": "us"})
    assert config.egress_caps("n2").pipe_of == {"n3": "eu", "n4": "eu"}
    write_cluster_config(config, tmp_path / "cluster.toml")
    assert load_config(tmp_path / "cluster.toml") == config


def test_no_caps_means_unlimited_egress() -> None:
    config = parse_cluster_config(cluster_document(), Path("."))
    assert all(config.egress_caps(n).is_unlimited for n in config.member_ids)


@pytest.mark.parametrize(
    ("topology", "field"),
    [
        ({"egress_bytes_per_s": 0}, "topology.egress_bytes_per_s"),
        ({"egress_bytes_per_s": "fast"}, "topology.egress_bytes_per_s"),
        (
            {"links": [{"from": "us", "to": "eu", "delay_ms": 1.0, "bandwidth": -5}]},
            "topology.links[0].bandwidth",
        ),
        (
            {"links": [{"from": "us", "to": "eu", "delay_ms": 1.0, "bandwidth": True}]},
            "topology.links[0].bandwidth",
        ),
    ],
)
def test_bad_caps_in_the_cluster_file_name_the_field(topology: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cluster_config(cluster_document(**topology), Path("."))
    assert str(caught.value).startswith(f"{field}: ")


# ---- scenario files ----------------------------------------------------------------------------


def scenario_raw(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "caps",
        "cluster": {"nodes": 4, "regions": ["us", "us", "eu", "eu"]},
        "topology": {"links": [{"from": "us", "to": "eu", "delay_ms": 30.0, "bandwidth": 1e6}]},
        "network": {"egress_bytes_per_s": 4e6},
    }
    raw.update(extra)
    return raw


def test_scenario_network_table_caps_every_node_and_links_cap_the_far_region() -> None:
    scenario = parse_scenario(scenario_raw())
    caps = scenario.egress_caps()
    assert caps["n1"] == EgressCaps(4e6, {"eu": 1e6}, {"n3": "eu", "n4": "eu"})
    assert caps["n4"] == EgressCaps(4e6, {"us": 1e6}, {"n1": "us", "n2": "us"})
    assert scenario.is_bandwidth_bound
    assert not parse_scenario({"name": "plain"}).is_bandwidth_bound


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"network": {"egress_bytes_per_s": 0}}, "network.egress_bytes_per_s"),
        ({"network": {"egress_bytes_per_s": "1e6"}}, "network.egress_bytes_per_s"),
        ({"network": {"egress": 1e6}}, "network.egress"),
        ({"network": 5}, "network"),
        (
            {
                "topology": {"egress_bytes_per_s": 1e6},
                "network": {"egress_bytes_per_s": 1e6},
            },
            "network.egress_bytes_per_s",
        ),
        (
            {"topology": {"links": [{"from": "us", "to": "eu", "delay_ms": 1, "bandwidth": 0}]}},
            "topology.links[0].bandwidth",
        ),
        (
            {"topology": {"links": [{"from": "us", "to": "mars", "delay_ms": 1}]}},
            "topology.links[0].to",
        ),
    ],
)
def test_malformed_caps_in_a_scenario_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(scenario_raw(**change))
    assert caught.value.field == field


def test_catalogue_bandwidth_scenarios_cap_what_their_descriptions_say() -> None:
    uplink = load_scenario("leader-uplink")
    caps = uplink.egress_caps()
    assert len({c.total for c in caps.values()}) == 1  # identical machines
    assert all(c.total is not None and not c.pipe_of for c in caps.values())
    geo = load_scenario("geo-bandwidth")
    for node, node_caps in geo.egress_caps().items():
        assert node_caps.total is None
        far = {p for p in geo.node_ids if geo.region_of(p) != geo.region_of(node)}
        assert set(node_caps.pipe_of) == far  # cross-region links only, one pipe per region
        assert len(node_caps.pipes) == 2


# ---- the simulator applies the real shaper's caps --------------------------------------------


def _append(src: str, dst: str, n: int, size: int) -> Envelope:
    command = Command(Op.PUT, key="k", value="v" * size, client_id="c", seq=n + 1)
    return Envelope(src, dst, AppendEntries(1, n, 1, (Entry(1, n + 1, command),), 0))


def test_simulator_and_real_shaper_carry_the_same_bytes_per_link() -> None:
    """The same offered traffic (every node flooding every peer, more than the caps allow)
    through the geo-bandwidth topology: each side resolves the caps its own way (the real
    node from its cluster file, the simulator from the scenario), and every link delivers the
    same bytes within 10% over a 5 s window."""
    scenario = load_scenario("geo-bandwidth")
    config = scenario.cluster_config(
        {n: ("127.0.0.1", 7002 + 2 * i) for i, n in enumerate(scenario.node_ids)}
    )
    shapers = {
        n: LinkShaper(random.Random(1), config.link_specs(n), egress=config.egress_caps(n))
        for n in scenario.node_ids
    }
    network = SimNetwork(
        random.Random(1), scenario.one_way_delays(), 0.0, egress=scenario.egress_caps()
    )
    network.fifo = True
    rng = random.Random(7)
    window = (2.0, 7.0)
    real: dict[tuple[str, str], int] = {}
    simulated: dict[tuple[str, str], int] = {}
    now = 0.0
    for n in range(60_000):
        now += rng.random() * 0.0004  # ~5000 frames/s offered, ~20 MB/s
        src, dst = rng.sample(scenario.node_ids, 2)
        envelope = _append(src, dst, n, rng.randint(500, 7000))
        size = encoded_size(envelope)
        at = shapers[src].schedule(dst, size, now)
        assert isinstance(at, float)
        if window[0] <= at < window[1]:
            real[(src, dst)] = real.get((src, dst), 0) + size
        for arrival in network.arrivals(envelope, now):
            if window[0] <= arrival < window[1]:
                simulated[(src, dst)] = simulated.get((src, dst), 0) + size
    assert set(real) == set(simulated)
    for link, carried in real.items():
        assert simulated[link] == pytest.approx(carried, rel=0.10), link
    cross = [(a, b) for a, b in real if scenario.region_of(a) != scenario.region_of(b)]
    for node in scenario.node_ids:  # and each far-region pipe holds its cap
        for region in {scenario.region_of(b) for a, b in cross if a == node}:
            through = sum(
                real[(node, b)]
                for b in scenario.node_ids
                if (node, b) in cross and scenario.region_of(b) == region
            )
            assert through <= 1e6 * (window[1] - window[0]) * 1.05


# ---- the ceiling ---------------------------------------------------------------------------


def test_quorum_ceiling_follows_the_majority_along_the_chains() -> None:
    ids = ("n1", "n2", "n3", "n4", "n5")
    pipes = pipes_of(ids, {n: EgressCaps(total=1000.0) for n in ids})
    star = {"n1": None, "n2": "n1", "n3": "n1", "n4": "n1", "n5": "n1"}
    cost = {p: 10.0 * sum(1 for m, s in star.items() if s == p.node) for p in pipes}
    rate, pipe = quorum_ceiling(star, pipes, cost)
    assert rate == pytest.approx(1000 / 40)
    assert pipe == Pipe("n1", UPLINK, 1000.0, frozenset(ids[1:]))
    chain = {"n1": None, "n2": "n1", "n3": "n1", "n4": "n2", "n5": "n3"}
    cost = {p: 10.0 * sum(1 for m, s in chain.items() if s == p.node) for p in pipes}
    assert quorum_ceiling(chain, pipes, cost)[0] == pytest.approx(1000 / 20)
    assert tree_depths(chain) == {"n1": 0, "n2": 1, "n3": 1, "n4": 2, "n5": 2}
    assert tree_depths({"n1": None, "n2": "n3", "n3": "n2"})["n2"] is None
    assert quorum_ceiling(star, pipes, {})[0] == math.inf


def test_a_simulated_capped_run_stays_under_its_ceiling_and_reaches_it() -> None:
    raw = dict(load_scenario("leader-uplink").raw)
    raw["run"] = {"warmup": 2.0, "duration": 4.0, "cooldown": 1.0}
    scenario = parse_scenario(raw)
    record = run_sim(scenario, "push", None, 1, 0, "push", "test")
    acked = sum(
        1
        for op in record.ops
        if op.f == "write"
        and op.outcome == "ok"
        and op.complete is not None
        and 2.0 <= op.complete < 6.0
    )
    ceiling = run_ceiling(record, acked)
    assert ceiling is not None and ceiling.predicted is not None
    assert ceiling.copies == scenario.nodes - 1  # push: the leader sends every copy
    assert ceiling.bytes_per_copy > scenario.workload.value_size
    assert ceiling.bytes_per_copy == bytes_per_copy(scenario)
    throughput = acked / 4.0
    assert throughput <= ceiling.predicted * 1.02
    assert throughput >= ceiling.predicted * 0.8  # the pipe, not the clients, is the limit
