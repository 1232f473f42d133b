"""LogLinearHistogram against known distributions: percentiles within the stated error, merge, memory."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.histogram import LogLinearHistogram

PERCENTILES = (1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99)


def exact_percentile(ordered: list[int], percentile: float) -> int:
    """Nearest-rank percentile of sorted values (the definition the histogram approximates)."""
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


def check_against_exact(histogram: LogLinearHistogram, values: list[int]) -> None:
    ordered = sorted(values)
    bound = histogram.relative_error
    for percentile in PERCENTILES:
        exact = exact_percentile(ordered, percentile)
        reported = histogram.value_at_percentile(percentile)
        assert abs(reported - exact) <= bound * exact, (percentile, exact, reported)
    assert histogram.value_at_percentile(100) == ordered[-1]
    assert histogram.value_at_percentile(0) == ordered[0]
    assert histogram.min == ordered[0] and histogram.max == ordered[-1]
    assert histogram.mean == pytest.approx(sum(values) / len(values))


@pytest.mark.parametrize("significant_bits", [5, 8, 11])
def test_uniform_distribution_within_relative_error(significant_bits: int) -> None:
    rng = random.Random(1)
    values = [rng.randint(1, 5_000_000) for _ in range(100_000)]
    histogram = LogLinearHistogram(significant_bits)
    for value in values:
        histogram.record(value)
    assert histogram.count == len(values)
    check_against_exact(histogram, values)


def test_exponential_distribution_within_relative_error() -> None:
    rng = random.Random(2)
    # latencies in microseconds: mean 2 ms, a long tail
    values = [round(rng.expovariate(1 / 2000.0)) for _ in range(100_000)]
    histogram = LogLinearHistogram()
    for value in values:
        histogram.record(value)
    check_against_exact(histogram, values)


def test_heavy_tail_spanning_many_magnitudes() -> None:
    rng = random.Random(3)
    values = [round(10 ** rng.uniform(0, 9)) for _ in range(50_000)]  # 1 us .. 1000 s
    histogram = LogLinearHistogram()
    for value in values:
        histogram.record(value)
    check_against_exact(histogram, values)


def test_percentiles_in_one_pass_match_single_queries() -> None:
    rng = random.Random(4)
    histogram = LogLinearHistogram()
    for _ in range(10_000):
        histogram.record(rng.randint(0, 100_000))
    together = histogram.percentiles(PERCENTILES)
    assert together == {p: histogram.value_at_percentile(p) for p in PERCENTILES}


def test_small_values_are_exact() -> None:
    histogram = LogLinearHistogram()
    for value in range(256):
        histogram.record(value)
        assert histogram.bucket_bounds(histogram.bucket_index(value)) == (value, value)
    assert histogram.value_at_percentile(50) == 127


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(5)
    values = [round(rng.expovariate(1 / 500.0)) for _ in range(20_000)]
    whole = LogLinearHistogram()
    parts = [LogLinearHistogram() for _ in range(4)]
    for index, value in enumerate(values):
        whole.record(value)
        parts[index % 4].record(value)
    merged = LogLinearHistogram()
    for part in parts:
        merged.merge(part)
    assert merged.to_dict() == whole.to_dict()
    check_against_exact(merged, values)


def test_merge_into_empty_and_from_empty() -> None:
    source = LogLinearHistogram()
    source.record(7)
    target = LogLinearHistogram()
    target.merge(LogLinearHistogram())
    assert target.count == 0
    target.merge(source)
    assert (target.count, target.min, target.max) == (1, 7, 7)


def test_merge_refuses_other_shapes() -> None:
    with pytest.raises(ValueError):
        LogLinearHistogram(8).merge(LogLinearHistogram(7))


def test_memory_is_fixed_whatever_is_recorded() -> None:
    histogram = LogLinearHistogram()
    before = histogram.memory_bytes
    assert before == 8 * histogram.bucket_count <= 32 * 1024
    rng = random.Random(6)
    for _ in range(200_000):
        histogram.record(rng.randint(0, 2**40))  # beyond the range too: clamped, not grown
    assert histogram.memory_bytes == before
    assert len(histogram.to_dict()["counts"]) <= histogram.bucket_count


def test_values_beyond_the_range_are_clamped_but_max_is_exact() -> None:
    histogram = LogLinearHistogram(max_bits=20)
    histogram.record(5)
    histogram.record(10**9)
    assert histogram.clamped == 1
    assert histogram.max == 10**9
    assert histogram.value_at_percentile(100) == 10**9


def test_round_trip_through_dict() -> None:
    histogram = LogLinearHistogram()
    for value in (1, 10, 100, 1000, 10_000, 10_000):
        histogram.record(value)
    copy = LogLinearHistogram.from_dict(histogram.to_dict())
    assert copy.to_dict() == histogram.to_dict()
    assert copy.percentiles() == histogram.percentiles()


def test_empty_histogram_reports_zeros() -> None:
    histogram = LogLinearHistogram()
    assert histogram.value_at_percentile(99) == 0
    assert histogram.mean == 0.0
    assert set(histogram.percentiles().values()) == {0}


def test_rejects_negative_values_and_bad_percentiles() -> None:
    histogram = LogLinearHistogram()
    with pytest.raises(ValueError):
        histogram.record(-1)
    with pytest.raises(ValueError):
        histogram.value_at_percentile(100.5)


def test_record_seconds_in_microseconds() -> None:
    histogram = LogLinearHistogram()
    histogram.record_seconds(0.0025)
    histogram.record_seconds(-1.0)  # a clock step back is recorded as 0
    assert (histogram.min, histogram.max) == (0, 2500)


@given(st.integers(min_value=0, max_value=2**37 - 1))
def test_every_value_lies_in_its_bucket_and_the_bucket_is_narrow(value: int) -> None:
    histogram = LogLinearHistogram()
    low, high = histogram.bucket_bounds(histogram.bucket_index(value))
    assert low <= value <= high
    midpoint = (low + high + 1) // 2 if high > low else low
    assert abs(midpoint - value) <= histogram.relative_error * max(value, 1)


def test_buckets_are_contiguous_and_increasing() -> None:
    histogram = LogLinearHistogram(significant_bits=4, max_bits=12)
    previous_high = -1
    for index in range(histogram.bucket_count):
        low, high = histogram.bucket_bounds(index)
        assert low == previous_high + 1
        assert histogram.bucket_index(low) == index == histogram.bucket_index(high)
        previous_high = high
    assert previous_high == 2**12 - 1


def naive_corrected(histogram: LogLinearHistogram, interval: int) -> LogLinearHistogram:
    """HdrHistogram's recordValueWithExpectedInterval, one back-filled value at a time."""
    fixed = histogram.copy()
    for low, high, n in histogram.buckets():
        value = min(max((low + high + 1) // 2 if high > low else low, histogram.min), histogram.max)
        missing = value - interval
        while missing >= interval:
            fixed.record(missing, n)
            missing -= interval
    return fixed


@pytest.mark.parametrize("interval", [7, 150, 1500, 40_000])
def test_coordinated_omission_correction_matches_the_value_by_value_rule(interval: int) -> None:
    rng = random.Random(interval)
    histogram = LogLinearHistogram()
    for _ in range(3000):
        histogram.record(int(rng.expovariate(1 / 2000)))
    histogram.record(1_000_000, 2)  # a stall
    fixed = histogram.corrected(interval)
    expected = naive_corrected(histogram, interval)
    assert list(fixed.buckets()) == list(expected.buckets())
    assert (fixed.count, fixed.total, fixed.min, fixed.max) == (
        expected.count,
        expected.total,
        expected.min,
        expected.max,
    )


def test_no_correction_without_an_interval_or_a_slow_value() -> None:
    histogram = LogLinearHistogram()
    histogram.record(100, 10)
    assert list(histogram.corrected(0).buckets()) == list(histogram.buckets())
    assert list(histogram.corrected(60).buckets()) == list(histogram.buckets())  # nothing >= 2 x 60
