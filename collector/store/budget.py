"""Read budget of ``GET /api/v1/series`` (collector/README.md, API; issue 9).

One answer holds at most ``limit`` points (``SERIES_MAX_POINTS`` at most; more: truncated) and
``SERIES_MAX_VALUES`` values (a point with ``field`` is one value, a point without it one per
field; with ``step`` one per bucket and field); one query scans at most ``SERIES_MAX_BLOCKS``
sample blocks (one timestamp of one measurement on one device). Beyond the values or blocks
budget the store raises ``SeriesBudgetExceeded`` (the API answers 413 with its message).
Memory of a query grows with its answer, never with the raw data in its time range.
"""
from __future__ import annotations

SERIES_MAX_POINTS = 100_000
SERIES_MAX_VALUES = 500_000
SERIES_MAX_BLOCKS = 200_000


class SeriesBudgetExceeded(ValueError):
    """A series query would read or answer more than the budget; the message says how to narrow it."""
