"""The link shaper's decisions, with a seeded random source and caller-given times."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from cluster.shaper import PERFECT, Drop, EgressCaps, LinkShaper, LinkSpec, SerialPipes
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


# ---- shared egress caps: a node's uplink and its share of a WAN pipe ---------------------------

WINDOW = 5.0


def _sent_in_window(
    shaper: LinkShaper, frames: list[tuple[str, int]], offered_every: float
) -> dict[str, int]:
    """Hand `frames` over one every `offered_every` s (faster than any cap) and count, per
    peer, the bytes whose transmission ends inside [1, 1 + WINDOW): after a warm-up second."""
    sent: dict[str, int] = {}
    for i, (dst, size) in enumerate(frames):
        at = shaper.schedule(dst, size, now=i * offered_every)
        assert isinstance(at, float)
        if 1.0 <= at < 1.0 + WINDOW:
            sent[dst] = sent.get(dst, 0) + size
    return sent


def test_uplink_cap_is_shared_by_all_links_and_holds_within_5_percent() -> None:
    cap = 100_000.0
    shaper = LinkShaper(random.Random(1), egress=EgressCaps(total=cap))
    frames = [(f"n{2 + i % 4}", 1000 + 37 * (i % 11)) for i in range(20_000)]
    sent = _sent_in_window(shaper, frames, offered_every=0.0001)
    assert set(sent) == {"n2", "n3", "n4", "n5"}  # every link gets its turn
    assert sum(sent.values()) == pytest.approx(cap * WINDOW, rel=0.05)
    assert sum(sent.values()) <= cap * WINDOW + 1500  # never more than the cap (one frame)


def test_region_pipes_cap_each_far_side_separately() -> None:
    caps = EgressCaps(
        pipes={"west": 40_000.0, "eu": 20_000.0},
        pipe_of={"n3": "west", "n4": "west", "n5": "eu"},
    )
    shaper = LinkShaper(random.Random(1), egress=caps)
    frames = [(peer, 800) for _ in range(10_000) for peer in ("n3", "n4", "n5", "n2")]
    sent = _sent_in_window(shaper, frames, offered_every=0.00005)
    assert sent["n3"] + sent["n4"] == pytest.approx(40_000 * WINDOW, rel=0.05)
    assert sent["n5"] == pytest.approx(20_000 * WINDOW, rel=0.05)
    # n2 is in no pipe: its frames leave when handed over (and all did before the window)
    assert shaper.schedule("n2", 800, now=100.0) == 100.0


def test_uplink_and_region_pipe_and_link_cap_combine() -> None:
    caps = EgressCaps(total=10_000.0, pipes={"eu": 5_000.0}, pipe_of={"n3": "eu"})
    shaper = LinkShaper(random.Random(1), {"n3": LinkSpec(delay=0.1)}, egress=caps)
    assert shaper.schedule("n3", 1000, now=0.0) == pytest.approx(0.3)  # 1000/5000 + delay
    # the first frame held the uplink 0.1 s (its rate), the eu pipe 0.2 s
    assert shaper.schedule("n2", 1000, now=0.0) == pytest.approx(0.2)
    shaper.update_link("n2", bandwidth=500.0)
    assert shaper.schedule("n2", 1000, now=0.0) == pytest.approx(2.2)  # its own link: 2 s
    shaper.set_egress(EgressCaps())
    assert shaper.schedule("n3", 10, now=5.0) == pytest.approx(5.1)  # caps lifted


def test_partitioned_or_lost_frames_do_not_use_the_uplink() -> None:
    shaper = LinkShaper(random.Random(1), egress=EgressCaps(total=1000.0))
    shaper.update_link("n2", partitioned=True)
    assert shaper.schedule("n2", 1000, now=0.0) is Drop.PARTITION
    assert shaper.schedule("n3", 1000, now=0.0) == pytest.approx(1.0)


def test_bad_egress_caps_are_refused() -> None:
    with pytest.raises(CallerError):
        EgressCaps(total=0.0)
    with pytest.raises(CallerError):
        EgressCaps(pipes={"eu": -1.0})
    with pytest.raises(CallerError):
        EgressCaps(pipes={"eu": 1.0}, pipe_of={"n2": "us"})


def test_serial_pipes_never_exceed_any_rate() -> None:
    pipes = SerialPipes()
    rng = random.Random(3)
    finishes: list[tuple[float, int]] = []
    now = 0.0
    for _ in range(5000):
        now += rng.random() * 0.001
        size = rng.randint(1, 3000)
        path: list[tuple[Hashable, float]] = [(("total",), 100_000.0)]
        if rng.random() < 0.5:
            path.append((("pipe", "eu"), 50_000.0))
        finishes.append((pipes.pass_through(path, size, now), size))
    finishes.sort()
    end = finishes[-1][0]
    total = sum(size for _, size in finishes)
    assert total / end <= 100_000.0 * 1.0001
