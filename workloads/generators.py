"""What a client does next: key distributions, operation mixes, values, open-loop arrivals.

Both the simulator's clients and the real driver's clients plan their operations here, so a
scenario produces the same operations whichever of them runs it. Everything is a pure function of
the workload, a caller-given seed and the client id (numpy `Generator`s built from a
`SeedSequence`; no global randomness, no clocks).

Pieces, from the bottom up:

- `KeyChooser`: which key an operation touches. `UniformKeys`, `ZipfianKeys` (YCSB's default
  skew, optionally scrambled so the hot keys are spread over the key space) and `LatestKeys`
  (YCSB's "latest": skewed toward the most recently written keys). Draws come in numpy blocks.
- `OpMix`: weights of read / write / cas / delete / rmw (read-modify-write: a read, then a
  compare-and-set from the value read to a new one), and of the consistency level of each read.
  Named presets: `PRESETS`.
- `Workload`: the whole [workload] table of a scenario, validated when built and parsed from a
  plain dict with `Workload.from_dict`.
- `OperationStream`: given a workload, a seed and a client id, yields `PlannedOp`s. Every written
  value is unique (client id and a counter, padded to `value_size`) because the linearizability
  checker must be able to tell writes apart.
- `arrival_times`: intended start times of an open-loop client. The driver measures latency
  from these, not from when it got round to sending, to avoid coordinated omission.

Errors: every bad input raises `WorkloadError` (a `ValueError`) whose `field` names the
offending field, e.g. ``workload.key_count: must be >= 1 (got -3)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from protocols.engine import Consistency
from protocols.errors import RaftbenchError
from protocols.quickinit import quick_init

MAX_KEY_COUNT: Final = 10_000_000  # zipfian/latest keep a table of key_count floats (80 MB here)
MIN_VALUE_SIZE: Final = 16  # room for the unique tag of a value (client id and counter)
MAX_VALUE_SIZE: Final = 1 << 20
MAX_ARRIVALS: Final = 50_000_000  # one open-loop schedule; beyond this the array is unreasonable
BLOCK: Final = 1024  # draws per numpy call; amortises the call overhead over many operations
KEY_DIGITS: Final = 6  # minimum digits of a key name: "k000123"

# Fixed seed of the scramble permutation: the hot keys must be the same for every client and
# every run (they depend on key_count only), as with YCSB's hash-based scrambling.
_SCRAMBLE_SEED: Final = 0x5C4A_3B1E
# Spawn-key tags keep the op stream and the arrival schedule of one (seed, client) independent.
_STREAM_TAG: Final = 0x0B5
_ARRIVAL_TAG: Final = 0xA11
# A load generator's process numbers: (stream * lanes + lane) * PROCESS_SPAN + generation, so
# that a run's records say which stream each operation came from (workloads.key_replay).
PROCESS_SPAN: Final = 1_000_000


class WorkloadError(RaftbenchError, ValueError):
    """A workload, an op mix or a generator argument that makes no sense.

    `field` is the dotted name of the offending field (``workload.mix.read``); the message
    starts with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class KeyDistribution(StrEnum):
    UNIFORM = "uniform"
    ZIPFIAN = "zipfian"
    LATEST = "latest"


class LoopMode(StrEnum):
    CLOSED = "closed"  # each client sends its next operation when the previous one completes
    OPEN = "open"  # operations start at scheduled times, whether or not earlier ones completed


class ArrivalProcess(StrEnum):
    POISSON = "poisson"  # exponential inter-arrival times: independent users
    UNIFORM = "uniform"  # a fixed interval, with a random phase per client


class OpKind(StrEnum):
    """What a planned operation does. All but RMW map one-to-one to a history `f`."""

    READ = "read"
    WRITE = "write"
    CAS = "cas"
    DELETE = "delete"
    RMW = "rmw"  # a read, then cas(expected=<value read>, new=value): YCSB-F's read-modify-write


_KINDS: Final = tuple(OpKind)


def key_name(index: int, key_count: int) -> str:
    """The name of key `index` of a key space of `key_count` keys, fixed width ("k000123").

    The width depends on key_count only, so every key of a workload has the same length and a
    write's size does not depend on which key it hits.
    """
    if not 0 <= index < key_count:
        raise WorkloadError("key index", f"must be in [0, {key_count}) (got {index})")
    return f"k{index:0{_key_width(key_count)}d}"


@lru_cache(maxsize=8)
def _key_width(key_count: int) -> int:
    """Digits of the key names of a `key_count`-key space (asked for every operation)."""
    return max(KEY_DIGITS, len(str(key_count - 1)))


def unique_value(client_id: int, counter: int, size: int) -> str:
    """A value no other write of the run carries: "c<client>-<counter>" padded with dots.

    Exactly `size` characters while the tag fits (client ids and counters below 10**6 always
    fit in the minimum size of 16); a longer tag is kept whole rather than cut, because
    uniqueness matters more than size.
    """
    tag = f"c{client_id}-{counter}"
    return tag.ljust(size, ".")


def value_origin(value: str) -> tuple[int, int] | None:
    """(client id, counter) of a value made by `unique_value`; None for any other string."""
    tag = value.rstrip(".")
    client, sep, counter = tag.partition("-")
    if not sep or not client.startswith("c") or not client[1:].isdigit() or not counter.isdigit():
        return None
    return int(client[1:]), int(counter)


# --------------------------------------------------------------------------------------------
# Validation helpers


def _kind(value: object) -> str:
    return type(value).__name__


def _check_int(value: object, name: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise WorkloadError(name, f"must be an integer (got {_kind(value)} {value!r})")
    if value < low:
        raise WorkloadError(name, f"must be >= {low} (got {value})")
    if high is not None and value > high:
        raise WorkloadError(name, f"must be <= {high} (got {value})")


def _check_key_count(value: object, name: str) -> None:
    _check_int(value, name, 1, MAX_KEY_COUNT)


def _number(value: object, name: str) -> float:
    """A TOML/Python number as a float; a boolean is not a number here."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise WorkloadError(name, f"must be a number (got {_kind(value)} {value!r})")
    return float(value)


def _positive(value: object, name: str) -> float:
    number = _number(value, name)
    if not math.isfinite(number) or number <= 0:
        raise WorkloadError(name, f"must be a finite number > 0 (got {value})")
    return number


def _weight(value: object, name: str) -> float:
    number = _number(value, name)
    if not math.isfinite(number) or number < 0:
        raise WorkloadError(name, f"must be a finite number >= 0 (got {value})")
    return number


_E = TypeVar("_E", bound=StrEnum)


def _parse_enum(value: object, enum: type[_E], name: str) -> _E:
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    choices = ", ".join(repr(member.value) for member in enum)
    raise WorkloadError(name, f"must be one of {choices} (got {value!r})")


def _parse_consistency(raw: object) -> dict[Consistency, float]:
    if not isinstance(raw, Mapping):
        raise WorkloadError("mix.consistency", f"must be a table of weights (got {_kind(raw)})")
    levels: dict[Consistency, float] = {}
    for key, weight in raw.items():
        level = _parse_enum(key, Consistency, f"mix.consistency.{key}")
        levels[level] = _number(weight, f"mix.consistency.{key}")
    return levels


# --------------------------------------------------------------------------------------------
# Key choosers


class _Blocks:
    """Hands out numbers one at a time from blocks drawn by `draw` (one numpy call per block)."""

    __slots__ = ("_draw", "_items", "_next")

    def __init__(self, draw: Callable[[int], NDArray[np.int64]]) -> None:
        self._draw = draw
        self._items: list[int] = []
        self._next = 0

    def take(self) -> int:
        if self._next == len(self._items):
            # tolist(): indexing a Python list is much cheaper than indexing a numpy array.
            self._items = self._draw(BLOCK).tolist()
            self._next = 0
        item = self._items[self._next]
        self._next += 1
        return item


class KeyChooser(ABC):
    """Chooses key indexes in [0, key_count) for one client, from the generator it is given.

    `next_read` serves every operation on existing data (read, cas, delete, rmw); `next_write`
    serves plain writes. They differ only for `LatestKeys`, where a write is an "insert" that
    becomes the newest key.
    """

    def __init__(self, key_count: int, rng: np.random.Generator) -> None:
        _check_key_count(key_count, "key_count")
        self.key_count = key_count
        self._rng = rng
        self._reads = _Blocks(self.sample)

    @abstractmethod
    def sample(self, size: int) -> NDArray[np.int64]:
        """`size` read keys at once (vectorised; draws from the same generator as next_read)."""

    def next_read(self) -> int:
        return self._reads.take()

    def next_write(self) -> int:
        return self._reads.take()


class UniformKeys(KeyChooser):
    """Every key equally likely."""

    def sample(self, size: int) -> NDArray[np.int64]:
        return self._rng.integers(0, self.key_count, size=size, dtype=np.int64)


@lru_cache(maxsize=8)
def _zipf_cdf(key_count: int, theta: float) -> NDArray[np.float64]:
    """Cumulative Zipf probabilities of ranks 1..key_count, last one exactly 1.0.

    Shared by every client of a run (read-only), which is why it is cached.
    """
    weights = np.arange(1, key_count + 1, dtype=np.float64) ** -theta
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # so that u < 1 always lands on a rank, whatever the rounding of the sum
    cdf.flags.writeable = False
    return cdf


@lru_cache(maxsize=8)
def _scramble(key_count: int) -> NDArray[np.int64]:
    """A fixed permutation of the key space: rank r (0-based) is key perm[r]."""
    perm = np.random.default_rng(_SCRAMBLE_SEED).permutation(key_count).astype(np.int64)
    perm.flags.writeable = False
    return perm


def zipf_pmf(key_count: int, theta: float) -> NDArray[np.float64]:
    """P(rank r) for r = 1..key_count: r**-theta / sum_i i**-theta (index 0 holds rank 1)."""
    _check_key_count(key_count, "key_count")
    _positive(theta, "zipf_theta")
    weights = np.arange(1, key_count + 1, dtype=np.float64) ** -theta
    pmf: NDArray[np.float64] = weights / weights.sum()
    return pmf


def _zipf_ranks(
    rng: np.random.Generator, key_count: int, theta: float, size: int
) -> NDArray[np.int64]:
    """0-based Zipf ranks, sampled exactly by inverting the cumulative distribution."""
    cdf = _zipf_cdf(key_count, theta)
    ranks: NDArray[np.int64] = np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)
    return ranks


class ZipfianKeys(KeyChooser):
    """YCSB's zipfian: P(rank r) proportional to r**-theta (theta 0.99 by default).

    YCSB samples with Gray et al.'s closed-form approximation, exact only for the two hottest
    ranks; here a cached table of the n cumulative probabilities is inverted with a binary
    search, so the sampled distribution is the Zipf law itself and tests can compare against
    its exact probabilities.

    Unscrambled, rank r is key r - 1 (k000000 is the hottest). Scrambled (YCSB's
    ScrambledZipfian, the default of its core workload), ranks go through a fixed permutation
    that depends on key_count only, so the hot keys are spread over the key space but are the
    same keys for every client.
    """

    def __init__(
        self,
        key_count: int,
        rng: np.random.Generator,
        theta: float = 0.99,
        scrambled: bool = True,
    ) -> None:
        super().__init__(key_count, rng)
        _positive(theta, "zipf_theta")
        self.theta = theta
        self.scrambled = scrambled

    def sample(self, size: int) -> NDArray[np.int64]:
        ranks = _zipf_ranks(self._rng, self.key_count, self.theta, size)
        if not self.scrambled:
            return ranks
        scrambled: NDArray[np.int64] = _scramble(self.key_count)[ranks]
        return scrambled


class LatestKeys(KeyChooser):
    """YCSB's "latest": reads favour the most recently written keys, with Zipf-distributed age.

    The key space is a ring that writes walk forward like YCSB's inserts, each write taking the
    next slot and becoming the newest key; a read takes the key written `a` slots before the
    newest, with the age `a` Zipf-distributed (age 0, the newest key, is the most likely). The
    ring starts as if keys 0..n-1 had been loaded in order, so the newest key is n-1 before
    this client has written anything.

    With `clients` > 1, client c writes slots c, c + clients, c + 2 * clients, ...: clients
    running at similar speeds fill the ring together in order, so the recent keys a client reads
    include its neighbours' writes (the shared notion of "latest" YCSB gets from its global
    insert counter), and no two clients write the same slot within one lap of the ring.
    """

    def __init__(
        self,
        key_count: int,
        rng: np.random.Generator,
        theta: float = 0.99,
        client_id: int = 0,
        clients: int = 1,
    ) -> None:
        super().__init__(key_count, rng)
        _positive(theta, "zipf_theta")
        if clients < 1:
            raise WorkloadError("clients", f"must be >= 1 (got {clients})")
        if client_id < 0:
            raise WorkloadError("client_id", f"must be >= 0 (got {client_id})")
        self.theta = theta
        self.newest = key_count - 1
        self._stride = clients
        self._next_slot = client_id % clients
        self._ages = _Blocks(self._draw_ages)

    def _draw_ages(self, size: int) -> NDArray[np.int64]:
        return _zipf_ranks(self._rng, self.key_count, self.theta, size)

    def sample(self, size: int) -> NDArray[np.int64]:
        """Read keys relative to the current newest key (no writes happen in between)."""
        keys: NDArray[np.int64] = (self.newest - self._draw_ages(size)) % self.key_count
        return keys

    def next_read(self) -> int:
        return (self.newest - self._ages.take()) % self.key_count

    def next_write(self) -> int:
        self.newest = self._next_slot % self.key_count
        self._next_slot = self.newest + self._stride
        return self.newest


# --------------------------------------------------------------------------------------------
# Operation mixes

_DEFAULT_CONSISTENCY: Final = ((Consistency.LINEARIZABLE, 1.0),)
_WEIGHT_FIELDS: Final = ("read", "write", "cas", "delete", "rmw")


@dataclass(frozen=True, slots=True)
class OpMix:
    """Relative weights of each kind of operation, and of the consistency level of reads.

    Weights need not sum to 1 (they are normalised) but must be finite, >= 0 and not all 0.
    `consistency` weights apply to every read, including the read half of an rmw.
    """

    read: float = 0.0
    write: float = 0.0
    cas: float = 0.0
    delete: float = 0.0
    rmw: float = 0.0
    consistency: tuple[tuple[Consistency, float], ...] = _DEFAULT_CONSISTENCY

    def __post_init__(self) -> None:
        for name in _WEIGHT_FIELDS:
            _weight(getattr(self, name), f"mix.{name}")
        if sum(getattr(self, name) for name in _WEIGHT_FIELDS) <= 0:
            raise WorkloadError("mix", "weights sum to 0: no operation could ever be chosen")
        levels: list[tuple[Consistency, float]] = []
        for raw_level, raw_weight in self.consistency:
            name = f"mix.consistency.{raw_level}"
            level = _parse_enum(raw_level, Consistency, name)
            if level in (seen for seen, _ in levels):
                raise WorkloadError(name, "given twice")
            levels.append((level, _weight(raw_weight, name)))
        object.__setattr__(self, "consistency", tuple(levels))  # frozen; strings become enums
        if sum(weight for _, weight in levels) <= 0:
            raise WorkloadError("mix.consistency", "weights sum to 0: reads need a level")

    @classmethod
    def preset(cls, name: str) -> OpMix:
        """A named mix from `PRESETS`."""
        try:
            return PRESETS[name]
        except KeyError:
            known = ", ".join(sorted(PRESETS))
            raise WorkloadError("mix", f"unknown preset {name!r} (known: {known})") from None

    def kind_probabilities(self) -> dict[OpKind, float]:
        """Normalised probability of each kind (kinds of weight 0 included, at 0.0)."""
        weights = [float(getattr(self, kind.value)) for kind in _KINDS]
        total = sum(weights)
        return {kind: weight / total for kind, weight in zip(_KINDS, weights, strict=True)}

    def consistency_probabilities(self) -> dict[Consistency, float]:
        total = sum(weight for _, weight in self.consistency)
        return {level: weight / total for level, weight in self.consistency}

    def with_consistency(self, levels: Mapping[Consistency, float]) -> OpMix:
        """This mix with other read consistency weights."""
        return OpMix(
            read=self.read,
            write=self.write,
            cas=self.cas,
            delete=self.delete,
            rmw=self.rmw,
            consistency=tuple(levels.items()),
        )

    @classmethod
    def from_value(cls, raw: object) -> OpMix:
        """Parse the `mix` entry of a workload table: a preset name or a table.

        A table is either ``{preset = "ycsb-b"}`` (optionally with ``consistency``) or explicit
        weights (``{read = 0.9, write = 0.1}``, missing kinds weigh 0), optionally with
        ``consistency = {linearizable = 0.8, local = 0.2}``.
        """
        if isinstance(raw, str):
            return cls.preset(raw)
        if not isinstance(raw, Mapping):
            raise WorkloadError("mix", f"must be a preset name or a table (got {_kind(raw)})")
        for key in raw:
            if key not in (*_WEIGHT_FIELDS, "preset", "consistency"):
                raise WorkloadError(f"mix.{key}", "unknown field")
        if "preset" in raw:
            preset = raw["preset"]
            if not isinstance(preset, str):
                raise WorkloadError("mix.preset", f"must be a string (got {_kind(preset)})")
            for name in _WEIGHT_FIELDS:
                if name in raw:
                    raise WorkloadError(f"mix.{name}", "cannot be combined with mix.preset")
            mix = cls.preset(preset)
        else:
            weights = [_number(raw.get(name, 0.0), f"mix.{name}") for name in _WEIGHT_FIELDS]
            read, write, cas, delete, rmw = weights
            mix = cls(read=read, write=write, cas=cas, delete=delete, rmw=rmw)
        if "consistency" in raw:
            mix = mix.with_consistency(_parse_consistency(raw["consistency"]))
        return mix

    def to_dict(self) -> dict[str, Any]:
        """Explicit weights and levels; `from_value` of it gives an equal mix."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _WEIGHT_FIELDS}
        out["consistency"] = {str(level): weight for level, weight in self.consistency}
        return out


PRESETS: Final[Mapping[str, OpMix]] = {
    "write-only": OpMix(write=1.0),
    "ycsb-a": OpMix(read=0.5, write=0.5),  # update heavy
    "ycsb-b": OpMix(read=0.95, write=0.05),  # read mostly
    "ycsb-c": OpMix(read=1.0),  # read only
    "ycsb-f": OpMix(read=0.5, rmw=0.5),  # read-modify-write
    # For correctness runs: every kind of write, so the checker sees cas successes and failures
    # and deletes make "expected absent" cas succeed again. Meant for a handful of keys.
    "cas-heavy": OpMix(read=0.3, write=0.2, cas=0.4, delete=0.1),
}


# --------------------------------------------------------------------------------------------
# Workload


@dataclass(frozen=True, slots=True)
class Workload:
    """The [workload] table of a scenario: what the clients do, and how fast.

    Closed loop: each of the `clients` has one operation outstanding at a time. Open loop:
    operations start at `rate` per second in total (split evenly over the clients), at times
    drawn by `arrival`, whether or not earlier ones have completed.
    """

    mix: OpMix = field(default_factory=lambda: PRESETS["ycsb-a"])
    key_count: int = 1000
    distribution: KeyDistribution = KeyDistribution.UNIFORM
    zipf_theta: float = 0.99  # zipfian and latest
    scrambled: bool = True  # zipfian only
    value_size: int = 64
    clients: int = 8
    loop: LoopMode = LoopMode.CLOSED
    rate: float | None = None  # operations per second, all clients together; open loop only
    arrival: ArrivalProcess = ArrivalProcess.POISSON  # open loop only

    def __post_init__(self) -> None:
        if not isinstance(self.mix, OpMix):
            raise WorkloadError("workload.mix", f"must be an OpMix (got {_kind(self.mix)})")
        _check_key_count(self.key_count, "workload.key_count")
        # Plain strings are accepted for the enum fields (frozen: hence object.__setattr__).
        for name, enum in (
            ("distribution", KeyDistribution),
            ("loop", LoopMode),
            ("arrival", ArrivalProcess),
        ):
            object.__setattr__(
                self, name, _parse_enum(getattr(self, name), enum, f"workload.{name}")
            )
        object.__setattr__(self, "zipf_theta", _positive(self.zipf_theta, "workload.zipf_theta"))
        if not isinstance(self.scrambled, bool):
            raise WorkloadError("workload.scrambled", f"must be a boolean (got {self.scrambled!r})")
        _check_int(self.value_size, "workload.value_size", MIN_VALUE_SIZE, MAX_VALUE_SIZE)
        _check_int(self.clients, "workload.clients", 1, None)
        if self.loop is LoopMode.OPEN:
            if self.rate is None:
                raise WorkloadError("workload.rate", "required with loop = 'open'")
            object.__setattr__(self, "rate", _positive(self.rate, "workload.rate"))
        elif self.rate is not None:
            raise WorkloadError("workload.rate", "only meaningful with loop = 'open'")

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Workload:
        """Build from a scenario's [workload] table; every field is optional.

        Types are checked strictly (a TOML boolean is not a number, a float is not an integer);
        unknown keys are rejected, naming the key, so that a typo cannot silently fall back to a
        default.
        """
        if not isinstance(raw, Mapping):
            raise WorkloadError("workload", f"must be a table (got {_kind(raw)})")
        known = set(cls.__dataclass_fields__)
        for key in raw:
            if key not in known:
                raise WorkloadError(f"workload.{key}", "unknown field")
        args: dict[str, Any] = {}
        if "mix" in raw:
            try:
                args["mix"] = OpMix.from_value(raw["mix"])
            except WorkloadError as error:
                raise WorkloadError(f"workload.{error.field}", error.problem) from None
        # Everything else is checked (types included) by __post_init__, which names the field.
        args.update((key, value) for key, value in raw.items() if key != "mix")
        return cls(**args)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for run metadata); `from_dict` of it gives an equal workload."""
        out: dict[str, Any] = {
            "mix": self.mix.to_dict(),
            "key_count": self.key_count,
            "distribution": str(self.distribution),
            "zipf_theta": self.zipf_theta,
            "scrambled": self.scrambled,
            "value_size": self.value_size,
            "clients": self.clients,
            "loop": str(self.loop),
            "arrival": str(self.arrival),
        }
        if self.rate is not None:
            out["rate"] = self.rate
        return out

    def key(self, index: int) -> str:
        return key_name(index, self.key_count)

    def key_chooser(self, rng: np.random.Generator, client_id: int = 0) -> KeyChooser:
        """The chooser of this workload's distribution for one client."""
        match self.distribution:
            case KeyDistribution.UNIFORM:
                return UniformKeys(self.key_count, rng)
            case KeyDistribution.ZIPFIAN:
                return ZipfianKeys(self.key_count, rng, self.zipf_theta, self.scrambled)
            case KeyDistribution.LATEST:
                return LatestKeys(self.key_count, rng, self.zipf_theta, client_id, self.clients)

    def arrivals(self, duration: float, seed: int, client_id: int) -> NDArray[np.float64]:
        """Intended start times of one client's operations in an open-loop run.

        Each client gets rate / clients; independent Poisson streams add up to a Poisson
        stream of the total rate.
        """
        if self.loop is not LoopMode.OPEN or self.rate is None:
            raise WorkloadError("workload.loop", "arrival times exist only with loop = 'open'")
        return arrival_times(
            self.rate / self.clients, duration, seed, self.arrival, client_id=client_id
        )


# --------------------------------------------------------------------------------------------
# Operation streams


@quick_init  # one per operation: the simulated steady-write scenario builds 17,000 a second
@dataclass(frozen=True, slots=True)
class PlannedOp:
    """One operation a client is to perform.

    - READ: get `key` at `consistency`.
    - WRITE: put `value` at `key`.
    - DELETE: delete `key`.
    - CAS: set `key` to `value` iff its current value is `expected` (None: iff absent).
    - RMW: get `key` at `consistency`, then cas(`key`, expected=<the value read>, new=`value`);
      `expected` is None here and unused (the driver only learns it from the read). The
      history records the two halves as a read and a cas.
    """

    kind: OpKind
    key: str
    value: str | None = None
    expected: str | None = None
    consistency: Consistency | None = None


class OperationStream:
    """The endless, deterministic sequence of operations of one client.

    The same (workload, seed, client_id) gives the same operations; clients of one run use the
    same seed and their own ids, which gives them independent streams.

    A cas expects the value this client last wrote to that key (None, i.e. absent, if it never
    did), assuming its own earlier writes succeeded. A driver that knows better (a read, or the
    current value a failed cas reports) may call `observe`, which makes the stream depend on
    those outcomes as well, still deterministically.
    """

    def __init__(self, workload: Workload, seed: int, client_id: int) -> None:
        _check_int(seed, "seed", 0, None)
        _check_int(client_id, "client_id", 0, None)
        self.workload = workload
        self.client_id = client_id
        root = np.random.SeedSequence(seed, spawn_key=(_STREAM_TAG, client_id))
        # Separate generators, so that e.g. changing the op mix leaves the key sequence alone.
        key_seq, kind_seq, level_seq = root.spawn(3)
        self._keys = workload.key_chooser(np.random.default_rng(key_seq), client_id)
        self._kinds = _Blocks(
            _categorical(np.random.default_rng(kind_seq), _kind_weights(workload))
        )
        self._levels = tuple(level for level, _ in workload.mix.consistency)
        self._level_draws = _Blocks(
            _categorical(np.random.default_rng(level_seq), [w for _, w in workload.mix.consistency])
        )
        self._written = 0
        self._known: dict[str, str | None] = {}

    def __iter__(self) -> Iterator[PlannedOp]:
        return self

    def __next__(self) -> PlannedOp:
        return self.next_op()

    def take(self, count: int) -> list[PlannedOp]:
        return [self.next_op() for _ in range(count)]

    def observe(self, key: str, value: str | None) -> None:
        """Tell the stream the value `key` was last seen to hold (None: absent)."""
        self._known[key] = value

    def next_op(self) -> PlannedOp:
        kind = _KINDS[self._kinds.take()]
        workload = self.workload
        if kind is OpKind.WRITE:
            key = workload.key(self._keys.next_write())
        else:
            key = workload.key(self._keys.next_read())
        # (`is` tests in turn: a match statement compares the enum's strings by value)
        if kind is OpKind.READ:
            return PlannedOp(kind, key, None, None, self._level())
        if kind is OpKind.WRITE:
            value = self._new_value()
            self._known[key] = value
            return PlannedOp(kind, key, value)
        if kind is OpKind.DELETE:
            self._known[key] = None
            return PlannedOp(kind, key)
        if kind is OpKind.CAS:
            expected = self._known.get(key)
            value = self._new_value()
            self._known[key] = value
            return PlannedOp(kind, key, value, expected)
        value = self._new_value()  # OpKind.RMW, the last kind
        self._known[key] = value
        return PlannedOp(kind, key, value, None, self._level())

    def _new_value(self) -> str:
        self._written += 1
        return unique_value(self.client_id, self._written, self.workload.value_size)

    def _level(self) -> Consistency:
        return self._levels[self._level_draws.take()]


def _kind_weights(workload: Workload) -> list[float]:
    return [float(getattr(workload.mix, kind.value)) for kind in _KINDS]


def _categorical(
    rng: np.random.Generator, weights: list[float]
) -> Callable[[int], NDArray[np.int64]]:
    """A block drawer of indexes into `weights`, each with probability weight / sum."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    cdf[-1] = 1.0

    def draw(size: int) -> NDArray[np.int64]:
        picks: NDArray[np.int64] = np.searchsorted(cdf, rng.random(size), side="right").astype(
            np.int64
        )
        return picks

    return draw


# --------------------------------------------------------------------------------------------
# Open-loop arrivals


def arrival_times(
    rate: float,
    duration: float,
    seed: int,
    process: ArrivalProcess | str = ArrivalProcess.POISSON,
    *,
    client_id: int = 0,
) -> NDArray[np.float64]:
    """Intended start times in [0, duration), sorted, of operations arriving at `rate` per second.

    "poisson": exponential gaps of mean 1 / rate. "uniform": gaps of exactly 1 / rate after a
    random phase in [0, 1 / rate), so that clients with the same rate do not fire in lockstep.
    Deterministic for a given (seed, client_id).
    """
    _positive(rate, "rate")
    if not isinstance(duration, int | float) or not math.isfinite(duration) or duration < 0:
        raise WorkloadError("duration", f"must be a finite number >= 0 (got {duration!r})")
    kind = _parse_enum(process, ArrivalProcess, "process")
    _check_int(seed, "seed", 0, None)
    _check_int(client_id, "client_id", 0, None)
    expected = rate * duration
    if expected > MAX_ARRIVALS:
        raise WorkloadError(
            "rate", f"rate * duration = {expected:.3g} arrivals, more than {MAX_ARRIVALS}"
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_ARRIVAL_TAG, client_id)))
    if kind is ArrivalProcess.UNIFORM:
        phase = rng.random() / rate
        steps = np.arange(math.ceil(expected) + 1, dtype=np.float64)
        times: NDArray[np.float64] = phase + steps / rate
        return times[times < duration]
    # Draw gaps in chunks sized to cover the expected count with a wide margin (six standard
    # deviations), so one or two numpy calls do it.
    chunk = int(expected + 6.0 * math.sqrt(expected)) + 16
    parts: list[NDArray[np.float64]] = [np.empty(0, dtype=np.float64)]
    last = 0.0
    while last < duration:
        points = last + np.cumsum(rng.exponential(1.0 / rate, size=chunk))
        parts.append(points)
        last = float(points[-1])
    poisson: NDArray[np.float64] = np.concatenate(parts)
    return poisson[poisson < duration]
