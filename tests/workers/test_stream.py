"""The byte-budgeted buffer: a producer ahead of its consumer waits at the budget."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import pytest

from tests.workers.conftest import ROOT, wait_until
from workers.client import Client
from workers.protocol import Level
from workers.stream import Closed, StreamBuffer

pytestmark = pytest.mark.timeout(120)

KB = 1000


class Producer(threading.Thread):
    """Puts `count` items of `size` bytes, counting them; stops at `Closed`."""

    def __init__(self, buf: StreamBuffer[bytes], count: int, size: int) -> None:
        super().__init__(daemon=True)
        self.buf, self.count, self.size = buf, count, size
        self.put = 0

    def run(self) -> None:
        try:
            for _ in range(self.count):
                self.buf.put(b"x" * self.size)
                self.put += 1
        except Closed:
            pass


def test_the_producer_waits_at_the_budget_and_goes_on_as_the_consumer_takes() -> None:
    buf: StreamBuffer[bytes] = StreamBuffer(10 * KB, client=Client())
    producer = Producer(buf, 100, KB)
    producer.start()
    try:
        wait_until(lambda: buf.waiting_producers == 1 and producer.put == 10,
                   what="the producer blocked with 10 items in")
        assert buf.nbytes == 10 * KB and len(buf) == 10
        assert buf.get() == b"x" * KB
        wait_until(lambda: producer.put == 11 and buf.waiting_producers == 1,
                   what="exactly one more item in, the producer blocked again")
        assert buf.nbytes <= 10 * KB
        for _ in range(89):
            buf.get()
        producer.join(30)
        assert producer.put == 100 and len(buf) == 10 and buf.nbytes == 10 * KB
    finally:
        buf.close()


def test_timeouts_too_big_items_and_close() -> None:
    buf: StreamBuffer[bytes] = StreamBuffer(3 * KB, client=Client())
    with pytest.raises(queue.Empty):
        buf.get(timeout=0)
    buf.put(b"a" * (2 * KB))
    with pytest.raises(queue.Full):
        buf.put(b"b" * (2 * KB), timeout=0)
    with pytest.raises(ValueError, match="can never fit"):
        buf.put(b"c" * (4 * KB))
    buf.close()
    with pytest.raises(Closed):
        buf.put(b"d")
    assert buf.get() == b"a" * (2 * KB)  # what was in is still delivered
    with pytest.raises(Closed):
        buf.get()


def test_a_closed_buffer_wakes_a_waiting_producer() -> None:
    buf: StreamBuffer[bytes] = StreamBuffer(KB, client=Client())
    producer = Producer(buf, 5, KB)
    producer.start()
    wait_until(lambda: buf.waiting_producers == 1, what="the producer blocked")
    buf.close()
    producer.join(30)
    assert not producer.is_alive() and producer.put == 1


def test_pressure_cuts_the_budget_and_a_lossy_trim_drops_the_oldest() -> None:
    client = Client()
    buf: StreamBuffer[bytes] = StreamBuffer(8 * KB, client=client)
    lossy: StreamBuffer[bytes] = StreamBuffer(8 * KB, client=client, lossy=True, name="tele")
    for i in range(8):
        lossy.put(bytes([i]) * KB)
    client.level = Level.CRITICAL  # the budget halves
    assert buf.budget() == 4 * KB
    for _ in range(4):
        buf.put(b"x" * KB)
    with pytest.raises(queue.Full):
        buf.put(b"x" * KB, timeout=0)
    result = client.trim(reason="test")  # at CRITICAL: half
    assert result.dropped == 4 and len(lossy) == 4 and lossy.get() == bytes([4]) * KB
    assert len(buf) == 4  # a lossless buffer loses nothing
    client.level = Level.LOW
    buf.put(b"x" * KB, timeout=0)
    stats = client.stats()
    assert stats.stores["buffer"] == 5 and stats.store_bytes["buffer"] == 5 * KB


PIPELINE = r"""
import json, threading, time
from workers.client import Client
from workers.stream import StreamBuffer
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
buf = StreamBuffer(20_000_000, client=Client())
def consume():
    got = 0
    while got < 200:
        buf.get()
        got += 1
        time.sleep(0.002)   # slower than the producer
consumer = threading.Thread(target=consume)
before = status("VmRSS:")
consumer.start()
for i in range(200):
    buf.put(b"%c" % (i % 256) * 1_000_000)   # 200 MB in all, made as it goes
consumer.join()
print(json.dumps({"streamed": 200_000_000, "peak_growth": status("VmHWM:") - before}))
"""


def test_streaming_200_mb_through_a_20_mb_budget_stays_near_the_budget() -> None:
    out = subprocess.run([sys.executable, "-c", PIPELINE], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    # The budget, plus the item being made and the one being taken.
    assert found["peak_growth"] < 25_000_000, found
