"""`spread` and `max_pullers` reach the engines from every door: scenario files, labels,
cluster.toml, `raftbench sim`, `raftbench cluster up` (launcher spec) and `raftbench node`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.config import ConfigError, parse_cluster_config
from cluster.launcher import ClusterSpec, LauncherError
from cluster.sim.simulator import SimConfig
from protocols.config import SyncSettings
from raftbench.cli import main
from raftbench.commands.node import _with_sync_overrides
from raftbench.commands.sim import sync_settings
from workloads.real_driver import cluster_spec
from workloads.scenario import ScenarioError, parse_protocol_label, parse_scenario
from workloads.sim_driver import sim_config
from workloads.sim_runner import replay_command, seed_configs


def scenario(**cluster: Any) -> dict[str, Any]:
    return {"name": "t", "cluster": {"nodes": 5, **cluster}}


def test_a_scenario_names_spread_and_its_cap() -> None:
    plan = parse_scenario(scenario(sync_policy="spread", max_pullers=3))
    assert (plan.sync_policy, plan.max_pullers) == ("spread", 3)
    sync = sim_config(plan, "pull", None, 1).config_overrides["sync"]
    assert (sync.policy, sync.max_pullers) == ("spread", 3)
    spec = cluster_spec(plan, "pull", None, 1, netns=False)
    assert spec.sync_settings() == SyncSettings(policy="spread", max_pullers=3)
    assert plan.cluster_config({"n1": ("127.0.0.1", 7000)}).sync.max_pullers == 3
    assert parse_scenario(scenario()).max_pullers == 2


@pytest.mark.parametrize("value", [0, 1.5, "2", True])
def test_a_bad_cap_in_a_scenario_names_the_field(value: object) -> None:
    with pytest.raises(ScenarioError, match=r"cluster\.max_pullers"):
        parse_scenario(scenario(max_pullers=value))


def test_the_label_pull_spread_is_accepted() -> None:
    assert parse_protocol_label("pull:spread") == ("pull", "spread")
    plan = parse_scenario(scenario()).with_sync_policy("spread")
    assert sim_config(plan, "pull", None, 1).config_overrides["sync"].policy == "spread"


def cluster_file(**sync: Any) -> dict[str, Any]:
    return {
        "cluster": {"secret": "s" * 32, "sync_policy": "spread"},
        "sync": sync,
        "members": [{"id": "n1", "peer": "127.0.0.1:7001", "client": "127.0.0.1:8001"}],
    }


def test_cluster_toml_takes_the_cap_and_rejects_a_bad_one() -> None:
    config = parse_cluster_config(cluster_file(max_pullers=4), Path("."))
    assert (config.sync.policy, config.sync.max_pullers) == ("spread", 4)
    with pytest.raises(ConfigError, match=r"sync\.max_pullers"):
        parse_cluster_config(cluster_file(max_pullers=0), Path("."))


def test_node_flags_override_the_cluster_file() -> None:
    config = parse_cluster_config(cluster_file(), Path("."))
    changed = _with_sync_overrides(config, "nearest", 5)
    assert (changed.sync.policy, changed.sync.max_pullers) == ("nearest", 5)
    assert _with_sync_overrides(config, None, None) == config


def test_node_refuses_a_bad_cap(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["node", "--config", "x.toml", "--id", "n1", "--protocol", "pull"]
    with pytest.raises(SystemExit):
        main([*args, "--max-pullers", "0"])
    assert "--max-pullers" in capsys.readouterr().err


def test_launcher_spec_carries_the_cap() -> None:
    spec = ClusterSpec(protocol="pull", sync_policy="spread", max_pullers=1).validate()
    assert spec.sync_settings() == SyncSettings(policy="spread", max_pullers=1)
    assert ClusterSpec().sync_settings() == SyncSettings()
    with pytest.raises(LauncherError, match="--max-pullers"):
        ClusterSpec(max_pullers=0).validate()


def test_sim_command_runs_spread_and_replays_with_its_cap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["sim", "--protocol", "pull", "--sync-policy", "spread", "--max-pullers", "1"]
    code = main([*args, "--seeds", "1", "--duration", "2", "--faults", "none"])
    assert code == 0
    assert capsys.readouterr().out.strip().endswith("seeds=1 violations=0 nonlinearizable=0")
    base = SimConfig(protocol="pull", config_overrides={"sync": sync_settings("spread", 5, 1)})
    (config,) = seed_configs(base, 1, 9)
    assert replay_command(config).endswith("--sync-policy spread --max-pullers 1")
