"""The link shaper's decisions, with a seeded random source and caller-given times."""

from __future__ import annotations

import random

import pytest

from cluster.shaper import PERFECT, Drop, LinkShaper, LinkSpec
from protocols.errors import CallerError


def test_perfect_link_delivers_at_once() -> None:
    shaper = LinkShaper(random.Random(1))
    assert shaper.schedule("n2", 100, now=5.0) == 5.0
    assert shaper.link("n2") == PERFECT


def test_delay_is_added_per_frame() -> None:
    shaper = LinkShaper(random.Random(1), {"n2": LinkSpec(delay=0.25)})
    assert shaper.schedule("n2", 10, now=1.0) == pytest.approx(1.25)
    assert shaper.schedule("n2", 10, now=3.0) == pytest.approx(3.25)
    assert shaper.schedule("n3", 10, now=3.0) == 3.0  # other links unaffected


def test_jitter_varies_delay_but_keeps_fifo_order() -> None:
    shaper = LinkShaper(random.Random(7), {"n2": LinkSpec(delay=0.05, jitter=0.04)})
    times = [shaper.schedule("n2", 10, now=i * 0.001) for i in range(500)]
    delivered = [t for t in times if isinstance(t, float)]
    assert len(delivered) == 500
    assert delivered == sorted(delivered)
    delays = [t - i * 0.001 for i, t in enumerate(delivered)]
    assert min(delays) >= 0.01 - 1e-12
    assert len({round(d, 9) for d in delays}) > 100  # really jittered


def test_jitter_never_makes_delay_negative() -> None:
    shaper = LinkShaper(random.Random(3), {"n2": LinkSpec(delay=0.001, jitter=0.5)})
    for i in range(200):
        at = shaper.schedule("n2", 1, now=float(i))
        assert isinstance(at, float)
        assert at >= i


def test_same_seed_same_decisions() -> None:
    spec = LinkSpec(delay=0.01, jitter=0.01, loss=0.3)
    first = LinkShaper(random.Random(42), {"n2": spec})
    second = LinkShaper(random.Random(42), {"n2": spec})
    one = [first.schedule("n2", 10, now=i / 100) for i in range(200)]
    two = [second.schedule("n2", 10, now=i / 100) for i in range(200)]
    assert one == two


def test_loss_one_drops_all_zero_drops_none() -> None:
    shaper = LinkShaper(random.Random(5), {"n2": LinkSpec(loss=1.0), "n3": LinkSpec(delay=0.1)})
    assert all(shaper.schedule("n2", 10, now=0.0) is Drop.LOSS for _ in range(1000))
    assert all(isinstance(shaper.schedule("n3", 10, now=0.0), float) for _ in range(1000))


def test_loss_rate_is_roughly_the_probability() -> None:
    shaper = LinkShaper(random.Random(11), {"n2": LinkSpec(loss=0.25)})
    lost = sum(shaper.schedule("n2", 10, now=0.0) is Drop.LOSS for _ in range(10_000))
    assert 2200 < lost < 2800


def test_partition_drops_everything_on_that_link_only() -> None:
    shaper = LinkShaper(random.Random(1))
    shaper.update_link("n2", partitioned=True)
    assert shaper.schedule("n2", 10, now=0.0) is Drop.PARTITION
    assert shaper.is_partitioned("n2")
    assert not shaper.is_partitioned("n3")
    shaper.update_link("n2", partitioned=False)
    assert shaper.schedule("n2", 10, now=1.0) == 1.0
    assert shaper.links() == {}  # a healed default link is forgotten


def test_bandwidth_serialises_frames() -> None:
    shaper = LinkShaper(random.Random(1), {"n2": LinkSpec(delay=0.01, bandwidth=1000.0)})
    first = shaper.schedule("n2", 500, now=0.0)
    second = shaper.schedule("n2", 500, now=0.0)
    later = shaper.schedule("n2", 100, now=10.0)
    assert first == pytest.approx(0.51)
    assert second == pytest.approx(1.01)
    assert later == pytest.approx(10.11)  # an idle link is not still busy


def test_frames_already_scheduled_keep_order_when_delay_drops() -> None:
    shaper = LinkShaper(random.Random(1), {"n2": LinkSpec(delay=1.0)})
    slow = shaper.schedule("n2", 10, now=0.0)
    shaper.set_link("n2", PERFECT)
    fast = shaper.schedule("n2", 10, now=0.1)
    assert slow == 1.0
    assert fast == 1.0  # behind the slow one, never before it


def test_bad_settings_are_refused() -> None:
    with pytest.raises(CallerError):
        LinkSpec(delay=-1.0)
    with pytest.raises(CallerError):
        LinkSpec(jitter=-0.1)
    with pytest.raises(CallerError):
        LinkSpec(loss=1.5)
    with pytest.raises(CallerError):
        LinkSpec(loss=-0.1)
    with pytest.raises(CallerError):
        LinkSpec(bandwidth=0.0)
    with pytest.raises(CallerError):
        LinkShaper(random.Random(1)).update_link("n2", latency=0.1)


def test_configure_replaces_all_links() -> None:
    shaper = LinkShaper(random.Random(1), {"n2": LinkSpec(delay=1.0)})
    shaper.configure({"n3": LinkSpec(loss=1.0), "n4": PERFECT})
    assert shaper.links() == {"n3": LinkSpec(loss=1.0)}
    assert shaper.schedule("n2", 1, now=0.0) == 0.0
