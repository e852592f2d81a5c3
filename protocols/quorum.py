"""Majority arithmetic, shared by both engines and nothing else (after etcd's quorum/)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from enum import Enum

from protocols.types import NodeId


def majority(size: int) -> int:
    """How many members make a majority of `size`."""
    return size // 2 + 1


def committed_index(acknowledged: Iterable[int], size: int) -> int:
    """The highest index that at least a majority of `size` members have acknowledged.

    `acknowledged` holds one index per member that has acknowledged anything; members that are
    missing count as 0.
    """
    values = sorted(acknowledged, reverse=True)
    needed = majority(size)
    if len(values) < needed:
        return 0
    return values[needed - 1]


class VoteResult(Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def vote_result(votes: Mapping[NodeId, bool], members: Collection[NodeId]) -> VoteResult:
    """Won when a majority granted, lost when a majority can no longer be reached."""
    granted = sum(1 for member in members if votes.get(member) is True)
    rejected = sum(1 for member in members if votes.get(member) is False)
    needed = majority(len(members))
    if granted >= needed:
        return VoteResult.WON
    if rejected > len(members) - needed:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(active: Collection[NodeId], members: Collection[NodeId]) -> bool:
    """Do the members in `active` form a majority of `members`?"""
    return sum(1 for member in members if member in active) >= majority(len(members))
