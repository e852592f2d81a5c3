"""Cluster configurations as log entries: single-server changes (Raft dissertation §4.1).

A configuration names the voters (whose votes and acknowledgements count) and the learners
(non-voting members: they get the log but count toward nothing, MongoDB's `votes: 0`). A
change is one command in the log, holding the whole new configuration; a node uses the latest
configuration in its log as soon as it is appended, committed or not, and goes back to the
previous one if that entry is truncated. Changes add or remove one server at a time, so any
majority of the old voters overlaps any majority of the new ones; and a leader accepts a new
change only once the previous one is committed (and once an entry of its own term is, the
known fix for §4.1's original rule). Those two rules are what keep one leader per term across
changes. hashicorp/raft (configuration.go) and etcd-io/raft (confchange) work the same way;
this module holds only the pure parts: the configuration, its encoding in a command, and the
check of a requested change against the current configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from protocols.errors import CallerError
from protocols.types import Command, NodeId, Op


class ChangeKind(StrEnum):
    ADD_VOTER = "add-voter"
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"  # a learner becomes a voter
    REMOVE = "remove"


class MembershipError(CallerError):
    """A requested change that does not apply to the current configuration."""


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters and learners, each in the order they joined (disjoint)."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        names = [*self.voters, *self.learners]
        if len(set(names)) != len(names):
            raise ValueError(f"a configuration names a member twice: {names}")
        if not all(isinstance(name, str) and name for name in names):
            raise ValueError(f"member ids must be non-empty strings: {names}")

    @property
    def members(self) -> tuple[NodeId, ...]:
        """Everyone the log is replicated to."""
        return self.voters + self.learners

    def role_of(self, node: NodeId) -> str | None:
        """ "voter", "learner" or None (not a member)."""
        if node in self.voters:
            return "voter"
        if node in self.learners:
            return "learner"
        return None

    def encode(self) -> str:
        return json.dumps({"voters": list(self.voters), "learners": list(self.learners)})

    @classmethod
    def decode(cls, text: str) -> Membership:
        """The configuration a config command carries; ValueError if malformed."""
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ValueError(f"configuration is not JSON: {error}") from error
        if type(raw) is not dict or set(raw) != {"voters", "learners"}:
            raise ValueError("configuration must have exactly 'voters' and 'learners'")
        voters, learners = raw["voters"], raw["learners"]
        if type(voters) is not list or type(learners) is not list:
            raise ValueError("configuration voters and learners must be lists")
        return cls(tuple(voters), tuple(learners))

    def describe(self) -> str:
        learners = f" learners {','.join(self.learners)}" if self.learners else ""
        return f"voters {','.join(self.voters) or '-'}{learners}"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One requested change: `kind` applied to `node`."""

    kind: ChangeKind
    node: NodeId

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ChangeKind):
            raise ValueError(f"unknown membership change {self.kind!r}")
        if not isinstance(self.node, str) or not self.node:
            raise ValueError("a membership change needs a node id")

    def describe(self) -> str:
        return f"{self.kind.value} {self.node}"


def apply_change(current: Membership, change: ConfChange) -> Membership:
    """The configuration after `change`; MembershipError (clear, nothing changed) if invalid."""
    node = change.node
    role = current.role_of(node)
    match change.kind:
        case ChangeKind.ADD_VOTER | ChangeKind.ADD_LEARNER:
            if role is not None:
                raise MembershipError(f"{node} is already a {role}")
            if change.kind is ChangeKind.ADD_VOTER:
                return Membership((*current.voters, node), current.learners)
            return Membership(current.voters, (*current.learners, node))
        case ChangeKind.PROMOTE:
            if role is None:
                raise MembershipError(f"{node} is not a member")
            if role == "voter":
                raise MembershipError(f"{node} is already a voter")
            learners = tuple(n for n in current.learners if n != node)
            return Membership((*current.voters, node), learners)
        case ChangeKind.REMOVE:
            if role is None:
                raise MembershipError(f"{node} is not a member")
            if current.voters == (node,):
                raise MembershipError(f"{node} is the last voter: the cluster would have none")
            return Membership(
                tuple(n for n in current.voters if n != node),
                tuple(n for n in current.learners if n != node),
            )
    raise MembershipError(f"unknown change {change.kind!r}")  # pragma: no cover (enum)


def config_command(membership: Membership, change: ConfChange) -> Command:
    """The log command that installs `membership` (it names the change, for readers)."""
    return Command(Op.CONFIG, key=change.describe(), value=membership.encode())


def membership_of(command: Command) -> Membership:
    """The configuration a CONFIG command installs (ValueError if it does not decode)."""
    if command.op is not Op.CONFIG or command.value is None:
        raise ValueError(f"not a configuration command: {command}")
    return Membership.decode(command.value)
