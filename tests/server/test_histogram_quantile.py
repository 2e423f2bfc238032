"""histogram_quantile_bound: the bucket that holds a quantile, and no answer from nothing."""

import pytest

from server_process import histogram_quantile_bound

BEFORE = {0.001: 2.0, 0.01: 5.0, float("inf"): 5.0}


def test_the_bound_of_the_bucket_holding_the_quantile():
    after = {0.001: 2.0, 0.01: 104.0, float("inf"): 105.0}  # 99 in (1, 10] ms, one beyond
    assert histogram_quantile_bound(BEFORE, after, 0.5) == 0.01
    assert histogram_quantile_bound(BEFORE, after, 0.99) == 0.01
    assert histogram_quantile_bound(BEFORE, after, 1.0) == float("inf")


def test_nothing_observed_between_the_readings_is_an_error_not_the_first_bound():
    with pytest.raises(ValueError, match="nothing was observed"):
        histogram_quantile_bound(BEFORE, dict(BEFORE), 0.99)
    with pytest.raises(ValueError, match="not on /metrics"):
        histogram_quantile_bound({}, {}, 0.99)
