"""Publishing never stalls the inference loop; figures printed for the record (run with -s to see them)."""

from __future__ import annotations

import statistics
import time

from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.listener import VerdictListener
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import ctl_settings, make_verdict, no_curve, pub_settings, report, wait_connected


def _publish_timed(pub: VerdictPublisher, verdicts) -> tuple[float, float, float]:
    """(total s, median single publish() s, worst single publish() s). The worst case is GIL/CPU scheduling
    on a shared machine, so the tests bound the total and the median and only report the worst."""
    times = []
    t0 = time.perf_counter()
    for v in verdicts:
        t = time.perf_counter()
        pub.publish(v)
        times.append(time.perf_counter() - t)
    return time.perf_counter() - t0, statistics.median(times), max(times)


def test_10k_publishes_without_subscriber_do_not_block():
    n = 10_000
    verdicts = [make_verdict(seq, "ng" if seq % 10 == 0 else "ok") for seq in range(n)]
    with VerdictPublisher(pub_settings(queue_size=n, history=1000), no_curve()) as pub:
        total, median, worst = _publish_timed(pub, verdicts)
        deadline = time.monotonic() + 10
        while pub.published + pub.dropped < n and time.monotonic() < deadline:
            time.sleep(0.01)
    report(f"[throughput] no subscriber: {n} publish() in {total:.3f} s = {n / total:,.0f}/s, "
          f"median call {median * 1e6:.0f} us, worst {worst * 1e3:.2f} ms; "
          f"sender thread sent {pub.published}, dropped {pub.dropped}")
    assert total < 5.0 and median < 1e-3
    assert pub.published == n and pub.dropped == 0


def test_slow_subscriber_does_not_stall_publishing_and_gaps_are_resynced():
    n = 2000
    big = [make_verdict(seq, heatmap=True) for seq in range(n)]
    for v in big:
        v.heatmap = v.heatmap.repeat(4, axis=0).repeat(4, axis=1)  # 192x256: ~48 KiB per message
    settings = pub_settings(sndhwm=10, history=n, queue_size=n)
    with VerdictPublisher(settings, no_curve()) as pub, ControlServer(ctl_settings(), no_curve(), None, pub) as ctl:
        with VerdictListener(pub.endpoint, control=ctl.endpoint, rcvhwm=10) as listener:
            wait_connected(listener)
            total, median, worst = _publish_timed(pub, big)  # the listener reads nothing meanwhile
            deadline = time.monotonic() + 10
            while pub.published + pub.dropped < n and time.monotonic() < deadline:
                time.sleep(0.01)
            seen: list[int] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(seen) < n:
                seen += [e.msg.msg_seq for e in listener.poll(0.2) if e.kind == "verdict"]
    s = listener.stats
    report(f"[throughput] slow subscriber: {n} publish() (48 KiB heat maps) in {total:.3f} s, median call "
          f"{median * 1e6:.0f} us, worst {worst * 1e3:.2f} ms; "
          f"subscriber got {s.received} live, {s.gaps} gaps, {s.resynced} resynced via last")
    assert total < 10.0 and median < 2e-3
    assert s.gaps > 0 and s.received < n  # ZeroMQ dropped for the slow subscriber, visibly
    assert sorted(seen) == list(range(n)) and s.unrecovered == 0  # ... and 'last' filled every gap


def test_publish_to_receive_latency_on_loopback():
    rounds = 300
    lat = []
    with VerdictPublisher(pub_settings(heartbeat_s=0.5), no_curve()) as pub, VerdictListener(pub.endpoint) as listener:
        wait_connected(listener)
        for seq in range(rounds):
            v = make_verdict(seq)
            t0 = time.perf_counter()
            pub.publish(v)
            while True:
                events = listener.poll(1.0)
                assert events, "verdict not received within 1 s"
                if any(e.kind == "verdict" and e.msg.seq == seq for e in events):
                    break
            lat.append((time.perf_counter() - t0) * 1e3)
    lat.sort()
    p50, p99 = statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]
    report(f"[latency] publish() -> listener event on loopback, {rounds} rounds: p50 {p50:.3f} ms, "
          f"p99 {p99:.3f} ms, max {lat[-1]:.3f} ms")
    assert p50 < 20.0
