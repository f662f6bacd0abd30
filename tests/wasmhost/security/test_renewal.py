"""Renewal timing: half-life with bounded jitter, exponential backoff with a cap."""

from __future__ import annotations

import pytest

from wasmhost.security import RenewalPolicy


def test_renewal_is_at_half_the_remaining_lifetime_within_the_jitter_band():
    policy = RenewalPolicy(fraction=0.5, jitter=0.1)
    assert policy.renew_delay(1000.0, 2000.0, 0.5) == pytest.approx(500.0)
    assert policy.renew_delay(1000.0, 2000.0, 0.0) == pytest.approx(400.0)
    assert policy.renew_delay(1000.0, 2000.0, 0.9999) == pytest.approx(600.0, abs=0.1)


def test_renewal_of_an_already_expired_certificate_is_immediate():
    assert RenewalPolicy().renew_delay(1000.0, 900.0, 0.5) == RenewalPolicy().min_delay


def test_backoff_doubles_up_to_the_cap_and_never_outlives_the_certificate():
    policy = RenewalPolicy(initial_backoff=1.0, max_backoff=8.0)
    delays = [policy.retry_delay(n, 1.0) for n in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.retry_delay(0, 0.0) == 0.5  # full jitter keeps at least half
    assert policy.retry_delay(5, 1.0, until_expiry=10.0) == 2.5


@pytest.mark.parametrize("kwargs", [{"fraction": 1.0}, {"jitter": 0.6}, {"initial_backoff": 0}])
def test_invalid_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RenewalPolicy(**kwargs)
