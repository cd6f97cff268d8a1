"""The log shipper keeps one batch in flight: a later batch waits for the earlier
one's ack, so the server stores lines in order even when a message is lost and
re-sent (the lossy-link test saw lines 1-4 stored after 5-30)."""

from __future__ import annotations

from dockyard.agent import logship
from dockyard.agent.logship import LogShipper
from dockyard.protocol.messages import LogLine


class Link:
    """Stands in for the connection: numbers messages, acks on request."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[LogLine, ...]]] = []
        self.unacked: set[str] = set()

    def send(self, lines: tuple[LogLine, ...]) -> str:
        msg_id = f"m{len(self.sent)}"
        self.sent.append((msg_id, lines))
        self.unacked.add(msg_id)
        return msg_id

    def pending(self, msg_id: str) -> bool:
        return msg_id in self.unacked

    def seqs(self) -> list[list[int]]:
        return [[line.seq for line in lines] for _, lines in self.sent]


def add(shipper: LogShipper, first: int, last: int) -> None:
    for seq in range(first, last + 1):
        shipper.add("t1", "stdout", seq, "", f"line {seq}")


def test_a_batch_waits_for_the_previous_ack_and_then_carries_all_that_gathered() -> None:
    link = Link()
    shipper = LogShipper(link.send, link.pending)
    add(shipper, 1, 3)
    shipper.flush()
    add(shipper, 4, 6)
    shipper.flush()
    shipper.flush()
    assert link.seqs() == [[1, 2, 3]]  # 4-6 wait: m0 is not acknowledged
    assert shipper.held() == 3
    add(shipper, 7, 7)
    link.unacked.discard("m0")  # the ack arrives
    shipper.flush()
    assert link.seqs() == [[1, 2, 3], [4, 5, 6, 7]]
    assert shipper.held() == 0


def test_held_lines_past_the_cap_go_out_in_full_batches_and_stop_sends_the_rest() -> None:
    link = Link()
    shipper = LogShipper(link.send, link.pending)
    add(shipper, 1, 1)
    shipper.flush()  # m0 in flight, never acknowledged (a server that does not answer)
    total = logship.MAX_HELD + 2 * logship.MAX_BATCH + 7
    add(shipper, 2, total)
    assert shipper.held() < logship.MAX_HELD  # memory stays bounded
    assert all(len(lines) == logship.MAX_BATCH for _, lines in link.sent[1:])
    shipper.stop()  # everything goes to the outbox, in order
    sent = [seq for batch in link.seqs() for seq in batch]
    assert sent == list(range(1, total + 1))
    assert shipper.held() == 0


def test_without_pending_nothing_waits() -> None:
    link = Link()
    shipper = LogShipper(link.send)
    for first in (1, 4):
        add(shipper, first, first + 2)
        shipper.flush()
    assert link.seqs() == [[1, 2, 3], [4, 5, 6]]


def test_drain_hands_on_every_line_once_the_earlier_batch_is_acked() -> None:
    """A task's end waits for its lines (so its final status follows them), bounded."""
    import threading

    link = Link()
    shipper = LogShipper(link.send, link.pending)
    add(shipper, 1, 2)
    shipper.flush()
    add(shipper, 3, 4)
    assert shipper.drain(0.05) is False  # m0 unacknowledged: 3-4 still held
    assert link.seqs() == [[1, 2]] and shipper.held() == 2
    ack = threading.Timer(0.1, lambda: link.unacked.discard("m0"))
    ack.start()
    try:
        assert shipper.drain(5) is True
    finally:
        ack.cancel()
    assert link.seqs() == [[1, 2], [3, 4]] and shipper.held() == 0
