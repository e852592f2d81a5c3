"""Membership changes, one server at a time (Raft dissertation §4.1), on both engines.

The tests drive the engines by hand through `Harness`; nodes beyond `voters` start `joining`
(no configuration until a leader adds them). Each test names the rule it checks.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cluster.config import (
    ConfigError,
    load_cluster_config,
    local_cluster_config,
    write_cluster_config,
)
from cluster.sim.harness import Harness
from protocols.codec import decode, encode
from protocols.config import Config
from protocols.engine import Consistency, ReplyStatus
from protocols.errors import CallerError, DecodeError
from protocols.kv import KVStateMachine
from protocols.membership import (
    ChangeKind,
    ConfChange,
    Membership,
    MembershipError,
    apply_change,
    config_command,
)
from protocols.messages import AppendEntries, Envelope, VoteRequest
from protocols.snapshot import restore, take
from protocols.types import Command, Entry, Op, Role

PROTOCOLS = ["push", "pull"]


def started(protocol: str, nodes: int = 5, voters: int = 3, **config: Any) -> Harness:
    h = Harness.create(protocol, nodes=nodes, voters=voters, **config)
    h.elect("n1")
    h.settle(0.5)
    return h


def voters_of(h: Harness, node: str) -> tuple[str, ...]:
    return h[node].voters


def committed(h: Harness, request_id: int) -> bool:
    reply = h.reply(request_id)
    return reply is not None and reply.status is ReplyStatus.OK


# ---- the pure rules ------------------------------------------------------------------------------


def test_changes_apply_one_server_at_a_time() -> None:
    base = Membership(("n1", "n2", "n3"))
    added = apply_change(base, ConfChange(ChangeKind.ADD_LEARNER, "n4"))
    assert added == Membership(("n1", "n2", "n3"), ("n4",))
    promoted = apply_change(added, ConfChange(ChangeKind.PROMOTE, "n4"))
    assert promoted == Membership(("n1", "n2", "n3", "n4"))
    removed = apply_change(promoted, ConfChange(ChangeKind.REMOVE, "n2"))
    assert removed == Membership(("n1", "n3", "n4"))
    assert apply_change(added, ConfChange(ChangeKind.REMOVE, "n4")) == base


@pytest.mark.parametrize(
    ("membership", "change", "message"),
    [
        (Membership(("n1",)), ConfChange(ChangeKind.REMOVE, "n1"), "last voter"),
        (Membership(("n1",)), ConfChange(ChangeKind.REMOVE, "n9"), "not a member"),
        (Membership(("n1",)), ConfChange(ChangeKind.PROMOTE, "n9"), "not a member"),
        (Membership(("n1",)), ConfChange(ChangeKind.PROMOTE, "n1"), "already a voter"),
        (Membership(("n1",), ("n2",)), ConfChange(ChangeKind.ADD_VOTER, "n2"), "already a"),
    ],
)
def test_bad_changes_are_refused_with_a_clear_error(
    membership: Membership, change: ConfChange, message: str
) -> None:
    with pytest.raises(MembershipError, match=message):
        apply_change(membership, change)


def test_a_configuration_round_trips_through_the_log_and_the_codec() -> None:
    membership = Membership(("n1", "n2"), ("n3",))
    command = config_command(membership, ConfChange(ChangeKind.ADD_LEARNER, "n3"))
    envelope = Envelope("n1", "n2", AppendEntries(1, 0, 0, (Entry(1, 1, command),), 0))
    assert decode(encode(envelope)) == envelope


@pytest.mark.parametrize(
    "value", ["not json", '{"voters": ["n1"]}', '{"voters": [1], "learners": []}']
)
def test_a_malformed_configuration_from_a_peer_is_refused(value: str) -> None:
    good = config_command(Membership(("n1",)), ConfChange(ChangeKind.ADD_VOTER, "n1"))
    wire = msgpack.unpackb(
        encode(Envelope("n1", "n2", AppendEntries(1, 0, 0, (Entry(1, 1, good),), 0)))
    )
    wire[3][3][0][2][2] = value  # envelope fields -> entries -> first -> command -> value
    with pytest.raises(DecodeError):
        decode(msgpack.packb(wire))
    with pytest.raises(ValueError):
        Command(Op.CONFIG, "add-voter n1", value)


def test_snapshot_keeps_voters_and_learners() -> None:
    kv = KVStateMachine()
    kv.apply(Entry(1, 1, Command(Op.PUT, "a", "1")))
    membership = Membership(("n1", "n2"), ("n3",))
    restored, _ = restore(take(1, 1, membership, kv))
    assert restored == membership


def test_bootstrap_and_joining_are_exclusive() -> None:
    with pytest.raises(CallerError, match="bootstrap"):
        Config("n1", ("n1",), bootstrap=True, joining=True).validate()


# ---- both engines --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_learner_is_replicated_to_but_never_campaigns(protocol: str) -> None:
    h = started(protocol)
    h.put("n1", "a", "1")
    request = h.change("n1", ChangeKind.ADD_LEARNER, "n4")
    h.settle(1.0)
    assert committed(h, request)
    assert h["n4"].membership == Membership(("n1", "n2", "n3"), ("n4",))
    assert h["n4"].kv.get("a") == "1"
    # Everyone else goes quiet: the learner's election timer fires, and it asks for no vote.
    h.crash("n1")
    h.inflight.clear()
    h.elapse_election_timeout("n4")
    assert h.role("n4") is Role.FOLLOWER
    assert not h.messages(VoteRequest, src="n4")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_learners_count_toward_no_commit(protocol: str) -> None:
    """A majority of voters commits; learners holding an entry do not make up for them."""
    h = started(protocol)
    for learner in ("n4", "n5"):
        request = h.change("n1", ChangeKind.ADD_LEARNER, learner)
        h.settle(1.0)
        assert committed(h, request)
    assert h["n1"].membership.learners == ("n4", "n5")
    h.isolate("n2")
    h.isolate("n3")
    h.cut -= {("n1", "n4"), ("n4", "n1"), ("n1", "n5"), ("n5", "n1")}
    write = h.put("n1", "k", "v")
    read = h.read("n1", "k", Consistency.LINEARIZABLE)
    h.settle(0.3)
    assert h["n4"].log.last_index == h["n1"].log.last_index  # the learners hold it
    assert h.reply(write) is None and h.reply(read) is None  # but nothing is confirmed
    h.heal()
    h.settle(1.0)
    assert committed(h, write)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_promoted_learner_counts_and_can_lead(protocol: str) -> None:
    h = started(protocol)
    h.change("n1", ChangeKind.ADD_LEARNER, "n4")
    h.settle(1.0)
    request = h.change("n1", ChangeKind.PROMOTE, "n4")
    h.settle(1.0)
    assert committed(h, request)
    assert h["n2"].voters == ("n1", "n2", "n3", "n4")
    # With four voters a majority is three: n1 and n4 alone cannot commit.
    h.isolate("n2")
    h.isolate("n3")
    h.cut -= {("n1", "n4"), ("n4", "n1")}
    write = h.put("n1", "k", "v")
    h.settle(0.3)
    assert h.reply(write) is None
    h.heal()
    h.settle(1.0)
    assert committed(h, write)
    h.crash("n1")
    h.inflight.clear()
    h.elect("n4")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_change_waits_until_the_previous_one_commits(protocol: str) -> None:
    h = started(protocol)
    first = h.change("n1", ChangeKind.ADD_VOTER, "n4")
    second = h.change("n1", ChangeKind.ADD_VOTER, "n5")
    reply = h.reply(second)
    assert reply is not None and reply.status is ReplyStatus.REFUSED
    assert reply.result is not None and "pending" in str(reply.result.value)
    h.settle(1.0)
    assert committed(h, first)
    third = h.change("n1", ChangeKind.ADD_VOTER, "n5")
    h.settle(1.0)
    assert committed(h, third)
    assert h["n5"].voters == ("n1", "n2", "n3", "n4", "n5")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_changes_and_followers_get_clear_answers(protocol: str) -> None:
    h = started(protocol)
    for kind, target, words in [
        (ChangeKind.REMOVE, "n9", "not a member"),
        (ChangeKind.PROMOTE, "n2", "already a voter"),
        (ChangeKind.ADD_VOTER, "n3", "already a voter"),
    ]:
        reply = h.reply(h.change("n1", kind, target))
        assert reply is not None and reply.status is ReplyStatus.REFUSED
        assert reply.result is not None and words in str(reply.result.value)
    reply = h.reply(h.change("n2", ChangeKind.ADD_VOTER, "n4"))
    assert reply is not None and reply.status is ReplyStatus.NOT_LEADER
    assert reply.leader == "n1"
    assert h["n1"].voters == ("n1", "n2", "n3")  # nothing changed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_removing_the_last_voter_is_refused(protocol: str) -> None:
    h = Harness.create(protocol, nodes=2, voters=1)
    h.elect("n1")
    h.settle(0.3)
    reply = h.reply(h.change("n1", ChangeKind.REMOVE, "n1"))
    assert reply is not None and reply.status is ReplyStatus.REFUSED
    assert reply.result is not None and "last voter" in str(reply.result.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_removed_leader_steps_down_once_the_change_commits(protocol: str) -> None:
    h = started(protocol)
    h.put("n1", "a", "1")
    h.settle(0.5)
    request = h.change("n1", ChangeKind.REMOVE, "n1")
    assert h.role("n1") is Role.LEADER  # appended, not committed: it still leads
    assert h["n1"].voters == ("n2", "n3")  # ... a configuration it is not part of
    h.settle(1.5)
    assert committed(h, request)
    assert h.role("n1") is Role.FOLLOWER
    (leader,) = h.leaders()
    assert leader in ("n2", "n3")
    write = h.put(leader, "b", "2")
    h.settle(1.0)
    assert committed(h, write)
    # The removed node never stands again, however long it waits.
    h.elapse_election_timeout("n1")
    assert h.role("n1") is Role.FOLLOWER
    assert not h.messages(VoteRequest, src="n1")


def test_configuration_takes_effect_when_appended_and_goes_back_when_truncated() -> None:
    """§4.1: a server uses the latest configuration in its log, committed or not."""
    h = Harness.create("push", nodes=5, voters=0)
    h.elect("n1")
    h.settle(0.3)
    h.change("n1", ChangeKind.REMOVE, "n5")
    # Only n2 gets the entry; n1 then crashes.
    h.deliver(lambda m: m.dst == "n2")
    h.drop()
    assert voters_of(h, "n2") == ("n1", "n2", "n3", "n4")
    h.crash("n1")
    h.elect("n3")  # n3, n4 and n5 vote: n3's log lacks the change
    h.settle(1.0)
    assert voters_of(h, "n2") == ("n1", "n2", "n3", "n4", "n5")  # truncated: back to the old one
    assert h["n2"].log.last_index == h["n3"].log.last_index


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bootstrap_forms_a_cluster_of_one_and_takes_the_others_in(protocol: str) -> None:
    ids = ("n1", "n2", "n3")
    h = Harness.create(protocol, nodes=3, voters=1)
    h.configs["n1"] = Config("n1", ids, bootstrap=True)
    h.crash("n1")
    h.start("n1")
    h.elect("n1")
    assert committed(h, h.put("n1", "a", "1"))
    for node in ("n2", "n3"):
        request = h.change("n1", ChangeKind.ADD_VOTER, node)
        h.settle(1.0)
        assert committed(h, request), node
    for node in ids:
        assert h[node].voters == ids
        assert h[node].kv.get("a") == "1"
    # A majority is now two of three.
    h.crash("n1")
    h.inflight.clear()
    h.settle(3.0)
    (leader,) = h.leaders()
    write = h.put(leader, "b", "2")
    h.settle(1.0)
    assert committed(h, write)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_new_member_of_a_compacted_cluster_gets_data_and_configuration(protocol: str) -> None:
    h = started(protocol, snapshot_entries=10, snapshot_chunk_bytes=64)
    for i in range(40):
        h.put("n1", f"k{i}", str(i))
        h.settle(0.05)
    assert h["n1"].log.snapshot_index > 0
    request = h.change("n1", ChangeKind.ADD_LEARNER, "n4")
    h.settle(3.0)
    assert committed(h, request)
    learner = h["n4"]
    assert learner.snapshots_installed >= 1
    assert learner.kv.get("k39") == "39"
    assert learner.membership == Membership(("n1", "n2", "n3"), ("n4",))
    # A restart rebuilds the configuration from snapshot and log alone.
    for i in range(15):
        h.put("n1", f"m{i}", str(i))
        h.settle(0.05)
    h.crash("n4")
    h.start("n4")
    assert h["n4"].membership == Membership(("n1", "n2", "n3"), ("n4",))
    assert h["n4"].log.snapshot_index > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_leader_status_shows_configuration_and_progress(protocol: str) -> None:
    h = started(protocol)
    h.change("n1", ChangeKind.ADD_LEARNER, "n4")
    h.settle(1.0)
    status = h["n1"].status()
    assert status.membership == Membership(("n1", "n2", "n3"), ("n4",))
    assert status.config_committed and status.config_index > 0
    roles = {row.node: row.role for row in status.progress}
    assert roles == {"n2": "voter", "n3": "voter", "n4": "learner"}
    assert all(row.entries_behind == 0 for row in status.progress)


# ---- the cluster file ----------------------------------------------------------------------------


def test_joined_members_in_the_cluster_file(tmp_path: Path) -> None:
    """A member added after the cluster formed is not an initial voter, and starts joining."""
    base = local_cluster_config(3)
    joined = replace(base.members[2], joined=True)
    config = replace(base, members=(*base.members[:2], joined)).validate()
    write_cluster_config(config, tmp_path / "cluster.toml")
    loaded = load_cluster_config(tmp_path / "cluster.toml")
    assert [m.joined for m in loaded.members] == [False, False, True]
    assert loaded.engine_config("n1").voters == ("n1", "n2")
    assert not loaded.engine_config("n1").joining
    assert loaded.engine_config("n3").joining
    everyone = tuple(replace(m, joined=True) for m in base.members)
    with pytest.raises(ConfigError, match="every member is 'joined'"):
        replace(base, members=everyone).validate()
    text = (tmp_path / "cluster.toml").read_text().replace("joined = true", 'joined = "yes"')
    (tmp_path / "cluster.toml").write_text(text)
    with pytest.raises(ConfigError, match="joined: expected true or false"):
        load_cluster_config(tmp_path / "cluster.toml")
