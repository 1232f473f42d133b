"""A fixed-memory, log-linear histogram of non-negative integers (HdrHistogram-style).

Values below ``2**significant_bits`` get a bucket each (exact). Above that, every power-of-two
range ``[2**k, 2**(k+1))`` is cut into ``2**(significant_bits - 1)`` equal buckets, so a bucket is
never wider than ``2**-(significant_bits - 1)`` of its lower bound. A recorded value is reported as
its bucket's midpoint, so any reported value (a percentile, the mean of a bucket) is within
``2**-significant_bits`` of a true value in the bucket: 0.39 % for the default 8 bits.
:attr:`LogLinearHistogram.relative_error` gives that bound.

Memory is fixed when the histogram is made: one ``array('Q')`` of counts, ``(max_bits -
significant_bits + 2) * 2**(significant_bits - 1)`` slots (3,968 slots = 31 KiB for the defaults,
which cover 0 to 2**37 - 1, i.e. 38 hours in microseconds). Larger values are clamped into the last
bucket and counted in :attr:`LogLinearHistogram.clamped`; the exact minimum and maximum are kept
beside the buckets.

Histograms with the same shape merge by adding counts (:meth:`LogLinearHistogram.merge`), so
per-user, per-interval or per-process histograms combine without losing precision.

Example:
    >>> h = LogLinearHistogram()
    >>> for value in range(1, 1001):
    ...     h.record(value)
    >>> h.count, h.min, h.max
    (1000, 1, 1000)
    >>> p50 = h.value_at_percentile(50)
    >>> abs(p50 - 500) / 500 <= h.relative_error
    True
    >>> h.value_at_percentile(100)
    1000
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "DEFAULT_MAX_BITS",
    "DEFAULT_SIGNIFICANT_BITS",
    "REPORTED_PERCENTILES",
    "LogLinearHistogram",
]

#: Linear resolution: 2**7 = 128 buckets per power of two, 0.39 % worst-case relative error.
DEFAULT_SIGNIFICANT_BITS = 8
#: Values up to 2**37 - 1 are kept apart (in microseconds: 38 hours); larger ones are clamped.
DEFAULT_MAX_BITS = 37
#: The percentiles every report shows.
REPORTED_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


class LogLinearHistogram:
    """Counts of integer values in log-linear buckets, in memory fixed at construction.

    Args:
        significant_bits: linear bits per power of two (2..16); the relative error bound is
            ``2**-significant_bits``.
        max_bits: values below ``2**max_bits`` are bucketed; larger ones are clamped.

    Raises:
        ValueError: parameters out of range.
    """

    __slots__ = (
        "_counts",
        "_half",
        "_shift_base",
        "_sum",
        "clamped",
        "count",
        "max",
        "max_bits",
        "min",
        "significant_bits",
    )

    def __init__(
        self, significant_bits: int = DEFAULT_SIGNIFICANT_BITS, max_bits: int = DEFAULT_MAX_BITS
    ) -> None:
        if not 2 <= significant_bits <= 16:
            raise ValueError("significant_bits must be in 2..16")
        if not significant_bits < max_bits <= 62:
            raise ValueError("max_bits must be greater than significant_bits and at most 62")
        self.significant_bits = significant_bits
        self.max_bits = max_bits
        self._half = 1 << (significant_bits - 1)
        self._shift_base = significant_bits
        slots = (max_bits - significant_bits + 2) * self._half
        self._counts = array("Q", bytes(8 * slots))
        #: Values recorded.
        self.count = 0
        #: Smallest value recorded (exact), 0 while empty.
        self.min = 0
        #: Largest value recorded (exact, even when clamped), 0 while empty.
        self.max = 0
        #: Values at or above ``2**max_bits``, counted in the last bucket.
        self.clamped = 0
        self._sum = 0

    # -- shape ----------------------------------------------------------------------------------

    @property
    def relative_error(self) -> float:
        """Worst-case relative error of a reported value (``2**-significant_bits``)."""
        return 2.0**-self.significant_bits

    @property
    def bucket_count(self) -> int:
        """Number of buckets (fixed)."""
        return len(self._counts)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the bucket counts (fixed at construction)."""
        return self._counts.itemsize * len(self._counts)

    def bucket_index(self, value: int) -> int:
        """The bucket of a non-negative integer ``value`` (clamped to the last bucket)."""
        bits = value.bit_length()
        if bits <= self._shift_base:
            return value
        if bits > self.max_bits:
            return len(self._counts) - 1
        shift = bits - self._shift_base
        return shift * self._half + (value >> shift)

    def bucket_bounds(self, index: int) -> tuple[int, int]:
        """``(lowest, highest)`` values that land in bucket ``index`` (both inclusive)."""
        if index < 2 * self._half:
            return index, index
        shift = index // self._half - 1
        mantissa = index - shift * self._half
        low = mantissa << shift
        return low, low + (1 << shift) - 1

    def _reported(self, index: int) -> int:
        low, high = self.bucket_bounds(index)
        return (low + high + 1) // 2 if high > low else low

    # -- recording ------------------------------------------------------------------------------

    def record(self, value: int, count: int = 1) -> None:
        """Record ``value`` (a non-negative integer) ``count`` times.

        Raises:
            ValueError: a negative value or count.
        """
        if value < 0 or count < 0:
            raise ValueError("values and counts must be non-negative")
        if count == 0:
            return
        # bucket_index() inlined: this runs several times for every request a generator sends.
        bits = value.bit_length()
        if bits <= self._shift_base:
            index = value
        elif bits > self.max_bits:
            index = len(self._counts) - 1
            self.clamped += count
        else:
            shift = bits - self._shift_base
            index = shift * self._half + (value >> shift)
        self._counts[index] += count
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += count
        self._sum += value * count

    def record_many(self, values: Iterable[int]) -> None:
        """Record each of ``values`` (non-negative integers) once: the same counts as
        :meth:`record` for each, at the cost of a sort and one bucket lookup per non-empty bucket.

        A load generator keeps its latencies in a list and records them in bulk: appending costs
        a request far less than finding its bucket (``loadtest/stats.py``).

        Raises:
            ValueError: a negative value (nothing is recorded then).

        Example:
            >>> h = LogLinearHistogram()
            >>> h.record_many([300, 5, 301, 5])
            >>> h.count, h.min, h.max, list(h.buckets())
            (4, 5, 301, [(5, 5, 2), (300, 301, 2)])
        """
        ordered = sorted(values)
        if not ordered:
            return
        lowest, highest = ordered[0], ordered[-1]
        if lowest < 0:
            raise ValueError("values and counts must be non-negative")
        total = len(ordered)
        counts = self._counts
        last = len(counts) - 1
        base, half, max_bits = self._shift_base, self._half, self.max_bits
        position = 0
        while position < total:
            # bucket_index() and bucket_bounds() inlined: this runs for each non-empty bucket.
            value = ordered[position]
            bits = value.bit_length()
            if bits <= base:  # (a bucket per value)
                index, highest_in_bucket = value, value
            elif bits > max_bits:
                index = last
            else:
                shift = bits - base
                index = shift * half + (value >> shift)
                highest_in_bucket = value | ((1 << shift) - 1)
            # (the last bucket also holds every clamped value: all the rest)
            end = total if index == last else bisect_right(ordered, highest_in_bucket, position)
            counts[index] += end - position
            position = end
        if highest >> self.max_bits:
            self.clamped += total - bisect_left(ordered, 1 << self.max_bits)
        if self.count == 0 or lowest < self.min:
            self.min = lowest
        if highest > self.max:
            self.max = highest
        self.count += total
        self._sum += sum(ordered)

    def record_seconds(self, seconds: float, unit: float = 1e-6) -> None:
        """Record a duration in seconds as an integer number of ``unit`` (microseconds by default).

        Negative durations (clock adjustments) are recorded as 0.
        """
        self.record(max(0, round(seconds / unit)))

    def merge(self, other: LogLinearHistogram) -> None:
        """Add every count of ``other`` (same shape) to this histogram.

        Raises:
            ValueError: the histograms have different shapes.
        """
        if (other.significant_bits, other.max_bits) != (self.significant_bits, self.max_bits):
            raise ValueError("cannot merge histograms of different shapes")
        if other.count == 0:
            return
        counts = self._counts
        for index, n in enumerate(other._counts):
            if n:
                counts[index] += n
        if self.count == 0 or other.min < self.min:
            self.min = other.min
        self.max = max(self.max, other.max)
        self.count += other.count
        self.clamped += other.clamped
        self._sum += other._sum

    def reset(self) -> None:
        """Forget every value (memory is kept)."""
        counts = self._counts
        for index in range(len(counts)):
            counts[index] = 0
        self.count = self.min = self.max = self.clamped = self._sum = 0

    def copy(self) -> LogLinearHistogram:
        """An independent copy."""
        twin = LogLinearHistogram(self.significant_bits, self.max_bits)
        twin.merge(self)
        return twin

    def corrected(self, expected_interval: int) -> LogLinearHistogram:
        """A copy back-filled for coordinated omission, as wrk and HdrHistogram do it.

        A closed-loop user that waited ``v`` for one response did not send the requests it would
        have sent meanwhile, one every ``expected_interval``; had they been sent they would have
        waited ``v - expected_interval``, ``v - 2 * expected_interval``... down to
        ``expected_interval``. This adds those values (HdrHistogram's
        ``recordValueWithExpectedInterval``; wrk's ``stats_correct``), computed bucket by bucket
        (each value is taken as its bucket's reported value), so a long stall costs no more than
        a scan of the buckets below it.

        Args:
            expected_interval: the interval between a user's requests when nothing stalls (same
                unit as the values; wrk uses run time x connections / requests). ``<= 0``: no
                correction.

        Example:
            >>> h = LogLinearHistogram()
            >>> h.record(100, 9); h.record(1000)       # 9 fast answers, one stall of 10 intervals
            >>> fixed = h.corrected(100)
            >>> h.value_at_percentile(90), fixed.count, fixed.value_at_percentile(90)  # 900 within 0.4 %
            (100, 19, 902)
        """
        fixed = self.copy()
        if expected_interval <= 0 or self.count == 0 or self.max < 2 * expected_interval:
            return fixed
        for index, n in enumerate(self._counts):
            if not n:
                continue
            value = min(max(self._reported(index), self.min), self.max)
            steps = value // expected_interval - 1  # values v - k*i for k = 1..steps are >= i
            if steps < 1:
                continue
            if steps <= 64:
                for k in range(1, steps + 1):
                    fixed.record(value - k * expected_interval, n)
                continue
            lowest = value - steps * expected_interval
            for target in range(self.bucket_index(lowest), self.bucket_index(value - expected_interval) + 1):
                low, high = self.bucket_bounds(target)
                # k with low <= value - k*i <= high, 1 <= k <= steps
                k_low = max(1, -(-(value - high) // expected_interval))
                k_high = min(steps, (value - low) // expected_interval)
                if k_high >= k_low:
                    hits = k_high - k_low + 1
                    fixed._counts[target] += hits * n
                    fixed.count += hits * n
                    first = value - k_high * expected_interval
                    last = value - k_low * expected_interval
                    fixed._sum += n * hits * (first + last) // 2
                    fixed.min = min(fixed.min, first)
        return fixed

    # -- reading --------------------------------------------------------------------------------

    @property
    def mean(self) -> float:
        """The exact mean of the recorded values (0.0 while empty)."""
        return self._sum / self.count if self.count else 0.0

    @property
    def total(self) -> int:
        """The exact sum of the recorded values."""
        return self._sum

    def value_at_percentile(self, percentile: float) -> int:
        """The value at ``percentile`` (0-100), nearest-rank, within :attr:`relative_error`.

        The 0th percentile is the exact minimum and the 100th the exact maximum; any other is
        the midpoint of the bucket holding the ranked value, clamped to ``[min, max]``. An empty
        histogram gives 0.

        Raises:
            ValueError: ``percentile`` outside 0-100.
        """
        if not 0.0 <= percentile <= 100.0:
            raise ValueError("percentile must be within 0..100")
        if self.count == 0:
            return 0
        if percentile == 0.0:
            return self.min
        rank = max(1, math.ceil(percentile / 100.0 * self.count))
        if rank >= self.count:
            return self.max
        seen = 0
        for index, n in enumerate(self._counts):
            if n:
                seen += n
                if seen >= rank:
                    return min(max(self._reported(index), self.min), self.max)
        return self.max  # not reached: the counts sum to self.count

    def percentiles(self, wanted: Iterable[float] = REPORTED_PERCENTILES) -> dict[float, int]:
        """Several percentiles in one pass: ``{percentile: value}``."""
        ordered = sorted(wanted)
        result: dict[float, int] = {}
        if self.count == 0:
            return dict.fromkeys(ordered, 0)
        ranks = [(p, max(1, math.ceil(p / 100.0 * self.count))) for p in ordered]
        position = 0
        seen = 0
        for index, n in enumerate(self._counts):
            if not n:
                continue
            seen += n
            while position < len(ranks) and ranks[position][1] <= seen:
                p, rank = ranks[position]
                if p == 0.0:
                    result[p] = self.min
                elif rank >= self.count:
                    result[p] = self.max
                else:
                    result[p] = min(max(self._reported(index), self.min), self.max)
                position += 1
            if position == len(ranks):
                break
        return result

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """``(lowest, highest, count)`` of every non-empty bucket, in increasing order."""
        for index, n in enumerate(self._counts):
            if n:
                low, high = self.bucket_bounds(index)
                yield low, high, n

    # -- serialization --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, sparse form: shape, exact stats, and ``{bucket index: count}``."""
        return {
            "significant_bits": self.significant_bits,
            "max_bits": self.max_bits,
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "sum": self._sum,
            "clamped": self.clamped,
            "counts": {str(index): n for index, n in enumerate(self._counts) if n},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogLinearHistogram:
        """Rebuild a histogram from :meth:`to_dict` output (e.g. from another process)."""
        histogram = cls(int(data["significant_bits"]), int(data["max_bits"]))
        for index, n in data["counts"].items():
            histogram._counts[int(index)] = int(n)
        histogram.count = int(data["count"])
        histogram.min = int(data["min"])
        histogram.max = int(data["max"])
        histogram._sum = int(data["sum"])
        histogram.clamped = int(data.get("clamped", 0))
        return histogram

    def __repr__(self) -> str:
        return (
            f"<LogLinearHistogram count={self.count} min={self.min} max={self.max} "
            f"p50={self.value_at_percentile(50)} p99={self.value_at_percentile(99)}>"
        )
