"""Tests of workloads.generators: distribution shapes (statistically), mixes, values, schedules.

The statistical tests use fixed seeds, so each is deterministic; the bounds are what a correct
generator passes for all but a tiny fraction of seeds (p-values of 0.001 or binomial bounds of
4 standard deviations, two-sided p ~ 6e-5), so changing a seed or the draw order does not make
them flap. Each kind of check is also shown to reject a sample of the wrong shape, so none of
them passes whatever the generator does.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pytest
from numpy.typing import NDArray

from protocols.engine import Consistency
from workloads.generators import (
    PRESETS,
    KeyDistribution,
    LatestKeys,
    OperationStream,
    OpKind,
    OpMix,
    PlannedOp,
    UniformKeys,
    Workload,
    WorkloadError,
    ZipfianKeys,
    arrival_times,
    key_name,
    unique_value,
    value_origin,
    zipf_pmf,
)

ALPHA = 0.001  # significance level of every chi-square test below
Z_BOUND = 4.0  # binomial/Poisson bounds in standard deviations (two-sided p ~ 6e-5)


# ------------------------------------------------------------------------------------------
# Statistics helpers (no scipy here)


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square(dof): the p-value of a chi-square test.

    This is the regularised upper incomplete gamma Q(dof/2, statistic/2), from its closed
    forms for integer and half-integer shape: Q(1, y) = exp(-y), Q(1/2, y) = erfc(sqrt(y)),
    and Q(s + 1, y) = Q(s, y) + y**s * exp(-y) / Gamma(s + 1). Checked against published
    table values in test_chi2_sf_matches_published_critical_values.
    """
    y = statistic / 2.0
    if dof % 2 == 0:
        s, q = 1.0, math.exp(-y)
    else:
        s, q = 0.5, math.erfc(math.sqrt(y))
    while s < dof / 2.0:
        q += math.exp(s * math.log(y) - y - math.lgamma(s + 1.0)) if y > 0 else 0.0
        s += 1.0
    return min(1.0, q)


def chi2_pvalue(observed: NDArray[np.int64], expected: NDArray[np.float64]) -> float:
    """Pearson's goodness-of-fit test: p-value of `observed` counts given `expected` counts."""
    assert observed.shape == expected.shape
    assert expected.min() >= 5, "chi-square needs >= 5 expected per cell"
    statistic = float((((observed - expected) ** 2) / expected).sum())
    return chi2_sf(statistic, len(observed) - 1)


def within_binomial(count: int, trials: int, p: float) -> bool:
    """|count - trials * p| within Z_BOUND standard deviations of a Binomial(trials, p)."""
    sd = math.sqrt(trials * p * (1.0 - p))
    return abs(count - trials * p) <= Z_BOUND * sd


def zipf_bins(ranks: NDArray[np.int64], key_count: int, theta: float, head: int) -> float:
    """p-value of 0-based ranks against Zipf(key_count, theta): `head` single ranks + the rest."""
    pmf = zipf_pmf(key_count, theta)
    counts = np.bincount(ranks, minlength=key_count)
    observed = np.append(counts[:head], counts[head:].sum())
    expected = len(ranks) * np.append(pmf[:head], pmf[head:].sum())
    return chi2_pvalue(observed, expected)


def test_chi2_sf_matches_published_critical_values() -> None:
    # Upper-tail critical values at p = 0.001 and p = 0.05 from standard chi-square tables
    # (e.g. the NIST/SEMATECH e-Handbook, section 1.3.6.7.4).
    table = {(1, 10.828): 0.001, (19, 43.820): 0.001, (99, 148.230): 0.001, (4, 9.488): 0.05}
    for (dof, critical), p in table.items():
        assert chi2_sf(critical, dof) == pytest.approx(p, rel=0.002)


# ------------------------------------------------------------------------------------------
# Key names and values


def test_key_names_have_a_fixed_width_that_grows_with_the_key_space() -> None:
    assert key_name(123, 1000) == "k000123"
    assert key_name(0, 1000) == "k000000"
    assert key_name(9_999_999, 10_000_000) == "k9999999"
    assert len({len(key_name(i, 20_000_000 // 2)) for i in (0, 7, 5_000_000, 9_999_999)}) == 1
    with pytest.raises(WorkloadError):
        key_name(1000, 1000)


def test_unique_value_is_padded_to_size_and_tells_its_origin() -> None:
    value = unique_value(3, 17, 32)
    assert len(value) == 32
    assert value_origin(value) == (3, 17)
    assert value_origin("hello") is None
    assert value_origin("c3-x...") is None


# ------------------------------------------------------------------------------------------
# Uniform


def test_uniform_keys_pass_a_chi_square_test() -> None:
    keys = UniformKeys(1000, np.random.default_rng(11)).sample(200_000)
    assert keys.min() >= 0
    assert keys.max() < 1000
    assert len(np.unique(keys)) == 1000  # every key reachable
    # 100 buckets of 10 keys: 2,000 expected per bucket, 99 degrees of freedom (critical value
    # 148.23 at p = 0.001).
    observed = np.bincount(keys // 10, minlength=100)
    assert chi2_pvalue(observed, np.full(100, len(keys) / 100)) > ALPHA


def test_uniform_chi_square_rejects_a_zipfian_sample() -> None:
    keys = ZipfianKeys(1000, np.random.default_rng(11), theta=0.99).sample(200_000)
    observed = np.bincount(keys // 10, minlength=100)
    assert chi2_pvalue(observed, np.full(100, len(keys) / 100)) < 1e-12


def test_uniform_chi_square_rejects_a_mildly_skewed_sample() -> None:
    # Uniform over 990 of 1000 keys: a 1% hole, which the test must still see.
    keys = np.random.default_rng(11).integers(0, 990, size=200_000)
    observed = np.bincount(keys // 10, minlength=100)
    assert chi2_pvalue(observed, np.full(100, len(keys) / 100)) < ALPHA


def test_next_read_draws_from_the_same_distribution_as_sample() -> None:
    chooser = UniformKeys(50, np.random.default_rng(2))
    keys = np.array([chooser.next_read() for _ in range(20_000)])
    observed = np.bincount(keys, minlength=50)
    assert chi2_pvalue(observed, np.full(50, len(keys) / 50)) > ALPHA


# ------------------------------------------------------------------------------------------
# Zipfian


@pytest.mark.parametrize("theta", [0.99, 0.6])
def test_zipfian_rank_frequency_slope_is_minus_theta(theta: float) -> None:
    keys = ZipfianKeys(1000, np.random.default_rng(5), theta=theta).sample(200_000)
    counts = np.sort(np.bincount(keys, minlength=1000))[::-1][:100]
    slope = np.polyfit(np.log(np.arange(1, 101)), np.log(counts), 1)[0]
    # Over 30 seeds the fitted slope has a standard deviation of ~0.004: 0.03 is ~8 of them,
    # and still far from the slope of any other theta worth distinguishing.
    assert slope == pytest.approx(-theta, abs=0.03)


def test_zipfian_top_key_frequency_is_p1() -> None:
    n, draws = 1000, 200_000
    pmf = zipf_pmf(n, 0.99)
    # p(1) = 1 / H(1000, 0.99), about 0.133 (YCSB's 1 / zeta(n, theta)).
    assert pmf[0] == pytest.approx(1.0 / sum(i**-0.99 for i in range(1, n + 1)))
    keys = ZipfianKeys(n, np.random.default_rng(9), scrambled=False).sample(draws)
    assert within_binomial(int((keys == 0).sum()), draws, float(pmf[0]))
    assert within_binomial(int((keys == 1).sum()), draws, float(pmf[1]))


def test_zipfian_fits_the_exact_zipf_law() -> None:
    keys = ZipfianKeys(1000, np.random.default_rng(21), scrambled=False).sample(200_000)
    assert zipf_bins(keys, 1000, 0.99, head=99) > ALPHA


def test_zipf_goodness_of_fit_rejects_a_neighbouring_theta() -> None:
    keys = ZipfianKeys(1000, np.random.default_rng(21), theta=0.9, scrambled=False).sample(200_000)
    assert zipf_bins(keys, 1000, 0.99, head=99) < 1e-12


def test_scrambled_zipfian_spreads_the_hot_keys_but_keeps_the_law() -> None:
    n, draws = 1000, 200_000
    keys = ZipfianKeys(n, np.random.default_rng(3)).sample(draws)
    counts = np.bincount(keys, minlength=n)
    hottest = np.argsort(counts)[::-1][:20]
    assert set(hottest.tolist()) != set(range(20))
    # The 20 hottest keys fall in many tenths of the key space, not in one corner.
    assert len(set((hottest // 100).tolist())) >= 5
    assert within_binomial(int(counts.max()), draws, float(zipf_pmf(n, 0.99)[0]))


def test_scrambled_zipfian_hot_keys_are_the_same_for_every_client() -> None:
    def hottest(seed: int) -> list[int]:
        keys = ZipfianKeys(1000, np.random.default_rng(seed)).sample(50_000)
        top: list[int] = np.argsort(np.bincount(keys, minlength=1000))[::-1][:3].tolist()
        return top

    assert hottest(1) == hottest(2) == hottest(3)


def test_zipfian_with_one_key_always_picks_it() -> None:
    assert ZipfianKeys(1, np.random.default_rng(0)).sample(100).tolist() == [0] * 100


# ------------------------------------------------------------------------------------------
# Latest


def test_latest_reads_favour_the_newest_keys() -> None:
    chooser = LatestKeys(1000, np.random.default_rng(4))
    written = [chooser.next_write() for _ in range(10)]
    assert written == list(range(10))  # writes walk the ring from the start
    counts = np.bincount(chooser.sample(100_000), minlength=1000)
    assert np.argsort(counts)[::-1][:5].tolist() == [9, 8, 7, 6, 5]


def test_latest_read_age_follows_zipf_as_the_newest_key_moves() -> None:
    # A read-mostly stream: track the newest write, measure each read's age (slots behind it).
    workload = Workload(mix=PRESETS["ycsb-b"], key_count=1000, distribution=KeyDistribution.LATEST)
    stream = OperationStream(workload, seed=8, client_id=0)
    newest = 999  # the ring starts as if keys 0..999 had been loaded in order
    ages: list[int] = []
    for op in stream.take(60_000):
        index = int(op.key[1:])
        if op.kind is OpKind.WRITE:
            newest = index
        else:
            ages.append((newest - index) % 1000)
    assert newest != 999  # the newest key did move
    reads = len(ages)
    age_counts = np.bincount(np.array(ages), minlength=1000)
    assert age_counts[:5].tolist() == sorted(age_counts[:5].tolist(), reverse=True)
    assert within_binomial(int(age_counts[0]), reads, float(zipf_pmf(1000, 0.99)[0]))
    assert zipf_bins(np.array(ages, dtype=np.int64), 1000, 0.99, head=50) > ALPHA


def test_latest_ages_measured_against_a_stale_newest_key_are_not_zipf() -> None:
    # The same measure with the newest key frozen at its start must fail: it shows that the
    # test above depends on reads following the writes.
    workload = Workload(mix=PRESETS["ycsb-b"], key_count=1000, distribution=KeyDistribution.LATEST)
    ops = OperationStream(workload, seed=8, client_id=0).take(60_000)
    ages = np.array([(999 - int(op.key[1:])) % 1000 for op in ops if op.kind is OpKind.READ])
    assert zipf_bins(ages.astype(np.int64), 1000, 0.99, head=50) < 1e-12


def test_latest_clients_interleave_their_writes() -> None:
    choosers = [
        LatestKeys(1000, np.random.default_rng(c), client_id=c, clients=4) for c in range(4)
    ]
    writes = [[chooser.next_write() for _ in range(250)] for chooser in choosers]
    assert writes[1][:3] == [1, 5, 9]
    assert sorted(key for client in writes for key in client) == list(range(1000))


# ------------------------------------------------------------------------------------------
# Op mixes


def kind_counts(ops: list[PlannedOp]) -> Counter[OpKind]:
    return Counter(op.kind for op in ops)


def mix_pvalue(counts: Mapping[OpKind, int], mix: OpMix) -> float:
    """Multinomial chi-square p-value of kind counts against a mix (kinds of weight > 0)."""
    probabilities = {k: p for k, p in mix.kind_probabilities().items() if p > 0}
    total = sum(counts.values())
    observed = np.array([counts.get(kind, 0) for kind in probabilities])
    expected = np.array([total * p for p in probabilities.values()])
    return chi2_pvalue(observed, expected)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_proportions_match_their_weights(preset: str) -> None:
    mix = OpMix.preset(preset)
    draws = 40_000
    ops = OperationStream(Workload(mix=mix, key_count=100), seed=1, client_id=0).take(draws)
    counts = kind_counts(ops)
    probabilities = mix.kind_probabilities()
    for kind, p in probabilities.items():
        if p == 0:
            assert counts[kind] == 0, kind
        else:
            assert within_binomial(counts[kind], draws, p), (kind, counts[kind])
    if sum(1 for p in probabilities.values() if p > 0) > 1:
        assert mix_pvalue(counts, mix) > ALPHA


def test_mix_check_rejects_the_wrong_mix() -> None:
    ops = OperationStream(Workload(mix=OpMix.preset("ycsb-b")), seed=1, client_id=0).take(20_000)
    counts = kind_counts(ops)
    assert mix_pvalue(counts, OpMix.preset("ycsb-a")) < 1e-12
    assert not within_binomial(counts[OpKind.READ], 20_000, 0.9)


def test_read_consistency_follows_the_mix() -> None:
    levels = {Consistency.LINEARIZABLE: 0.7, Consistency.LEADER: 0.2, Consistency.LOCAL: 0.1}
    mix = OpMix.preset("ycsb-f").with_consistency(levels)
    ops = OperationStream(Workload(mix=mix), seed=3, client_id=1).take(40_000)
    reads = [op for op in ops if op.kind in (OpKind.READ, OpKind.RMW)]
    assert all(op.consistency is None for op in ops if op.kind not in (OpKind.READ, OpKind.RMW))
    counts = Counter(op.consistency for op in reads)
    for level, p in levels.items():
        assert within_binomial(counts[level], len(reads), p), level
    observed = np.array([counts[level] for level in levels])
    assert chi2_pvalue(observed, len(reads) * np.array(list(levels.values()))) > ALPHA


# ------------------------------------------------------------------------------------------
# Streams: determinism, values, cas expectations


@pytest.mark.parametrize("distribution", ["uniform", "zipfian", "latest"])
def test_same_seed_same_stream_and_different_seeds_differ(distribution: str) -> None:
    workload = Workload.from_dict({"mix": "cas-heavy", "distribution": distribution})
    first = OperationStream(workload, seed=42, client_id=3).take(3000)
    assert OperationStream(workload, seed=42, client_id=3).take(3000) == first

    def choices(ops: list[PlannedOp]) -> list[tuple[OpKind, str]]:
        # Kinds and keys only: values always differ between clients (they carry the client id).
        return [(op.kind, op.key) for op in ops]

    assert choices(OperationStream(workload, seed=43, client_id=3).take(3000)) != choices(first)
    assert choices(OperationStream(workload, seed=42, client_id=4).take(3000)) != choices(first)


def test_stream_is_an_iterator_of_take() -> None:
    workload = Workload()
    stream = OperationStream(workload, seed=1, client_id=0)
    taken = [next(stream) for _ in range(100)]
    assert taken == OperationStream(workload, seed=1, client_id=0).take(100)


def test_key_sequence_does_not_depend_on_the_mix() -> None:
    def keys(preset: str) -> list[str]:
        workload = Workload(mix=OpMix.preset(preset), distribution=KeyDistribution.ZIPFIAN)
        return [op.key for op in OperationStream(workload, seed=5, client_id=0).take(2000)]

    assert keys("ycsb-a") == keys("ycsb-c")


def test_written_values_are_unique_and_sized() -> None:
    written: list[str] = []
    for preset in ("ycsb-a", "ycsb-f", "cas-heavy", "write-only"):
        workload = Workload(mix=OpMix.preset(preset), key_count=10, value_size=40, clients=4)
        for client in range(4):
            ops = OperationStream(workload, seed=7, client_id=client).take(2000)
            for op in ops:
                if op.kind in (OpKind.WRITE, OpKind.CAS, OpKind.RMW):
                    assert op.value is not None
                    assert len(op.value) == 40
                    origin = value_origin(op.value)
                    assert origin is not None
                    assert origin[0] == client
                    written.append(f"{preset}/{op.value}")
                else:
                    assert op.value is None
    assert len(written) > 20_000
    assert len(set(written)) == len(written)


def test_cas_expects_what_the_client_last_wrote_deleted_or_observed() -> None:
    workload = Workload(mix=OpMix(cas=0.5, write=0.3, delete=0.2), key_count=3)
    stream = OperationStream(workload, seed=2, client_id=0)
    last: dict[str, str | None] = {}
    observed_once = False
    for op in stream.take(3000):
        if op.kind is OpKind.CAS:
            assert op.expected == last.get(op.key)
        last[op.key] = op.value  # writes and cas set the value, deletes make it absent
        if not observed_once and op.kind is OpKind.WRITE:
            stream.observe(op.key, "someone-else")
            last[op.key] = "someone-else"
            observed_once = True
    assert observed_once
    assert None in [op.expected for op in stream.take(500) if op.kind is OpKind.CAS]


# ------------------------------------------------------------------------------------------
# Open-loop arrivals


def test_poisson_arrivals_have_the_rate_and_exponential_gaps() -> None:
    rate, duration = 2000.0, 50.0
    times = arrival_times(rate, duration, seed=6)
    assert np.all(np.diff(times) > 0)
    assert times[0] >= 0
    assert times[-1] < duration
    # The count is Poisson(rate * duration): mean and variance 100,000.
    expected = rate * duration
    assert abs(len(times) - expected) <= Z_BOUND * math.sqrt(expected)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1.0 / rate, rel=0.02)
    # Coefficient of variation of exponential gaps is 1; over 30 seeds its standard deviation
    # at this size is ~0.003.
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)
    assert exponential_pvalue(gaps, rate) > ALPHA


def exponential_pvalue(gaps: NDArray[np.float64], rate: float) -> float:
    """Chi-square of gaps over 20 bins of equal probability under Exp(rate) (19 dof)."""
    edges = -np.log1p(-np.linspace(0.0, 1.0, 21)[1:-1]) / rate  # quantiles 0.05 .. 0.95
    observed = np.bincount(np.searchsorted(edges, gaps), minlength=20)
    return chi2_pvalue(observed, np.full(20, len(gaps) / 20))


def test_uniform_arrivals_are_evenly_spaced_and_fail_the_exponential_test() -> None:
    rate = 500.0
    times = arrival_times(rate, 20.0, seed=6, process="uniform")
    gaps = np.diff(times)
    assert gaps == pytest.approx(np.full(len(gaps), 1.0 / rate))
    assert 0 <= times[0] < 1.0 / rate
    assert len(times) in (9999, 10_000)
    assert exponential_pvalue(gaps, rate) < 1e-12


def test_arrivals_are_deterministic_per_seed_and_client() -> None:
    first = arrival_times(100.0, 10.0, seed=1, client_id=2)
    assert np.array_equal(first, arrival_times(100.0, 10.0, seed=1, client_id=2))
    assert not np.array_equal(first, arrival_times(100.0, 10.0, seed=2, client_id=2))
    assert not np.array_equal(first, arrival_times(100.0, 10.0, seed=1, client_id=3))
    assert len(arrival_times(100.0, 0.0, seed=1)) == 0


def test_workload_arrivals_split_the_rate_over_clients() -> None:
    workload = Workload.from_dict({"loop": "open", "rate": 1000.0, "clients": 4})
    total = sum(len(workload.arrivals(40.0, seed=3, client_id=c)) for c in range(4))
    assert abs(total - 40_000) <= Z_BOUND * math.sqrt(40_000)
    with pytest.raises(WorkloadError) as error:
        Workload().arrivals(1.0, seed=1, client_id=0)
    assert error.value.field == "workload.loop"


# ------------------------------------------------------------------------------------------
# Parsing and validation


def test_from_dict_defaults_every_field() -> None:
    assert Workload.from_dict({}) == Workload()
    assert Workload().mix == OpMix.preset("ycsb-a")


def test_from_dict_reads_a_scenario_table() -> None:
    scenario = tomllib.loads(
        """
        [workload]
        mix = { preset = "ycsb-b", consistency = { linearizable = 0.8, local = 0.2 } }
        key_count = 5000
        distribution = "zipfian"
        zipf_theta = 0.8
        scrambled = false
        value_size = 128
        clients = 16
        loop = "open"
        rate = 800
        arrival = "uniform"
        """
    )
    workload = Workload.from_dict(scenario["workload"])
    assert workload.mix.read == 0.95
    assert workload.mix.consistency_probabilities() == {
        Consistency.LINEARIZABLE: 0.8,
        Consistency.LOCAL: 0.2,
    }
    assert (workload.key_count, workload.distribution, workload.zipf_theta) == (
        5000,
        "zipfian",
        0.8,
    )
    assert (workload.scrambled, workload.value_size, workload.clients) == (False, 128, 16)
    assert (workload.loop, workload.rate, workload.arrival) == ("open", 800.0, "uniform")


def test_explicit_mix_weights_default_to_zero() -> None:
    workload = Workload.from_dict({"mix": {"read": 3, "cas": 1}})
    assert workload.mix.kind_probabilities()[OpKind.READ] == 0.75
    assert workload.mix.kind_probabilities()[OpKind.WRITE] == 0.0


@pytest.mark.parametrize(
    "workload",
    [
        Workload(),
        Workload.from_dict({"mix": "cas-heavy", "key_count": 5, "distribution": "latest"}),
        Workload.from_dict(
            {
                "mix": {"read": 1, "rmw": 2, "consistency": {"leader": 1, "local": 1}},
                "loop": "open",
                "rate": 10,
                "arrival": "uniform",
            }
        ),
    ],
)
def test_to_dict_round_trips(workload: Workload) -> None:
    assert Workload.from_dict(workload.to_dict()) == workload


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"key_count": -5}, "workload.key_count"),
        ({"key_count": 0}, "workload.key_count"),
        ({"key_count": 2.5}, "workload.key_count"),
        ({"key_count": True}, "workload.key_count"),
        ({"key_count": 10**9}, "workload.key_count"),
        ({"distribution": "pareto"}, "workload.distribution"),
        ({"zipf_theta": 0}, "workload.zipf_theta"),
        ({"zipf_theta": float("inf")}, "workload.zipf_theta"),
        ({"scrambled": "yes"}, "workload.scrambled"),
        ({"value_size": 8}, "workload.value_size"),
        ({"clients": 0}, "workload.clients"),
        ({"loop": "sometimes"}, "workload.loop"),
        ({"loop": "open"}, "workload.rate"),
        ({"loop": "open", "rate": -1}, "workload.rate"),
        ({"loop": "open", "rate": float("nan")}, "workload.rate"),
        ({"rate": 100}, "workload.rate"),
        ({"arrival": "bursty"}, "workload.arrival"),
        ({"keys": 10}, "workload.keys"),
        ({"mix": 3}, "workload.mix"),
        ({"mix": "ycsb-z"}, "workload.mix"),
        ({"mix": {"read": 0, "write": 0}}, "workload.mix"),
        ({"mix": {"read": -1, "write": 1}}, "workload.mix.read"),
        ({"mix": {"read": "lots"}}, "workload.mix.read"),
        ({"mix": {"reads": 1}}, "workload.mix.reads"),
        ({"mix": {"preset": "ycsb-a", "write": 1}}, "workload.mix.write"),
        ({"mix": {"preset": 1}}, "workload.mix.preset"),
        ({"mix": {"read": 1, "consistency": {"strong": 1}}}, "workload.mix.consistency.strong"),
        ({"mix": {"read": 1, "consistency": {"local": 0}}}, "workload.mix.consistency"),
        ({"mix": {"read": 1, "consistency": "local"}}, "workload.mix.consistency"),
    ],
)
def test_validation_errors_name_the_field(table: dict[str, object], field: str) -> None:
    with pytest.raises(WorkloadError) as error:
        Workload.from_dict(table)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(WorkloadError, match=r"^workload\.key_count: must be >= 1"):
        Workload(key_count=-1)
    with pytest.raises(WorkloadError, match=r"^mix: weights sum to 0"):
        OpMix()
    with pytest.raises(WorkloadError, match=r"^workload\.distribution"):
        Workload(distribution="pareto")  # type: ignore[arg-type]


def test_from_dict_rejects_a_non_table() -> None:
    with pytest.raises(WorkloadError) as error:
        Workload.from_dict(["key_count", 3])  # type: ignore[arg-type]
    assert error.value.field == "workload"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0.0, "duration": 1.0}, "rate"),
        ({"rate": 1.0, "duration": -1.0}, "duration"),
        ({"rate": 1.0, "duration": 1.0, "process": "gamma"}, "process"),
        ({"rate": 1.0, "duration": 1.0, "seed": -1}, "seed"),
        ({"rate": 1e9, "duration": 1e9}, "rate"),
    ],
)
def test_arrival_arguments_are_validated(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"seed": 0, **kwargs}
    with pytest.raises(WorkloadError) as error:
        arrival_times(**arguments)  # type: ignore[arg-type]
    assert error.value.field == field


def test_stream_arguments_are_validated() -> None:
    with pytest.raises(WorkloadError) as error:
        OperationStream(Workload(), seed=-1, client_id=0)
    assert error.value.field == "seed"
    with pytest.raises(WorkloadError) as error:
        OperationStream(Workload(), seed=1, client_id=-2)
    assert error.value.field == "client_id"
