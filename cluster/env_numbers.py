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


def positive_seconds(name: str, seconds: float, error: type[ValueError]) -> float:
    """`seconds` (read from the variable `name`) if positive and finite; `error` otherwise."""
    if not 0 < seconds < float("inf"):
        raise error(f"{name}={seconds!r}: must be a positive number of seconds")
    return seconds
