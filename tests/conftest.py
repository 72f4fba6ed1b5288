"""Test-session settings: one intra-op thread per process.

The tests run tiny networks (batches of 8-64, 24-32 pixel frames), where torch's OpenMP threads
buy nothing and cost a barrier per op: each parallel region waits for every worker, and when any
worker is descheduled (another process or a thread of the test itself wants the core) the op waits
a scheduler slice. On a busy 2-core machine `tests/test_runner.py::test_resume_equals_uninterrupted`
took 60 s with one thread and had not finished after 20 minutes with torch's default (2 threads),
every stack sampled inside libgomp's barrier. Set here, before torch is first imported, so that
subprocesses the tests start (CLI runs, sweep workers) inherit it. An explicit OMP_NUM_THREADS wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
