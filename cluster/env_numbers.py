"""Numbers a node reads from its environment: the switches of its optional diagnostics.

Why one parser: a malformed or nonsensical value must stop the node with an error that names
the variable, the same way for every switch, rather than run with a period of NaN or -1.
"""

from __future__ import annotations

from collections.abc import Mapping


def env_number(env: Mapping[str, str], name: str, default: str, error: type[ValueError]) -> float:
    """The variable `name` as a number (`default` when unset or empty); `error` when it is not."""
    text = env.get(name) or default
    try:
        return float(text)
    except ValueError:
        raise error(f"{name}={text!r}: not a number") from None


def env_seconds(env: Mapping[str, str], name: str, default: str, error: type[ValueError]) -> float:
    """The variable `name` as a positive, finite number of seconds; `error` otherwise."""
    seconds = env_number(env, name, default, error)
    if not 0 < seconds < float("inf"):
        raise error(f"{name}={env.get(name) or default!r}: must be a positive number of seconds")
    return seconds
