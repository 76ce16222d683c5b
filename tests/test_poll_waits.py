"""Status polls of one job: the first soon after submission, then 1.5× longer each time
up to the policy's interval (a job done in half a second is seen then, not after 2 s)."""

from __future__ import annotations

import itertools

import pytest

from remote_steer.remote.backend import RetryPolicy


def test_poll_waits_grow_geometrically_to_the_interval():
    waits = list(itertools.islice(RetryPolicy().poll_waits(), 10))
    assert waits[0] == pytest.approx(0.2)
    assert waits[:4] == pytest.approx([0.2, 0.3, 0.45, 0.675])
    assert max(waits) == pytest.approx(2.0) and waits[-1] == pytest.approx(2.0)
    assert all(b >= a for a, b in itertools.pairwise(waits))
    # within two seconds of submission: the check at once, then 4 polls (a fixed 2 s interval: none)
    elapsed = list(itertools.accumulate(waits))
    assert sum(t <= 2.0 for t in elapsed) == 4


def test_an_interval_below_the_first_wait_caps_it():
    assert list(itertools.islice(RetryPolicy(poll_interval_s=0.05).poll_waits(), 3)) == [0.05] * 3
