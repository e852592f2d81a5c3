"""The registry of engines, so callers pick one by name (`--protocol push|pull`)."""

from __future__ import annotations

from protocols.engine import EngineFactory
from protocols.errors import CallerError
from protocols.pull import PullEngine
from protocols.push import PushEngine

ENGINES: dict[str, EngineFactory] = {
    "push": PushEngine,
    "pull": PullEngine,
}


def engine_factory(protocol: str) -> EngineFactory:
    """The engine class for `protocol`, or a CallerError listing the choices."""
    try:
        return ENGINES[protocol]
    except KeyError:
        choices = ", ".join(sorted(ENGINES))
        raise CallerError(f"unknown protocol {protocol!r}; choose one of: {choices}") from None
