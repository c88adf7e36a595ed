"""A worker for the channel tests: fills a bounded store and history until shut down.

Usage: channel_worker.py [--on-thread]   (trims on the client thread, no checkpoint calls)
"""

import sys
import time

import workers

on_thread = "--on-thread" in sys.argv
client = workers.connect(stats_interval_s=0.05, trim_on_thread=on_thread)
store = workers.RecentStore()
history = workers.History()
client.ready()
i = 0
while not client.shutdown_requested.is_set():
    store.put(i, (i, "x" * 20))
    history.append(i)
    i += 1
    if not on_thread:
        client.checkpoint()
    if i % 500 == 0:
        time.sleep(0.001)  # leave the machine to the test on 2 cores
print(f"stopped after {i} puts", flush=True)
