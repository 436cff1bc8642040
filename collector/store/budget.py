"""Read budget of ``GET /api/v1/series`` (collector/README.md, API; issue 9).

One answer holds at most ``limit`` points (``SERIES_MAX_POINTS`` at most; more: truncated) and
``SERIES_MAX_VALUES`` values (a point with ``field`` is one value, a point without it one per
field; with ``step`` one per bucket and field); one query reads at most ``SERIES_MAX_ROWS`` stored
rows (a raw sample of one series, or one rollup bucket of one series, in the chunks it decodes and
in the head). Beyond the values or rows budget the store raises ``SeriesBudgetExceeded`` (the API
answers 413 with its message). With a step, rollups are read instead of raw samples (series.py).
"""
from __future__ import annotations

SERIES_MAX_POINTS = 100_000
SERIES_MAX_VALUES = 500_000
SERIES_MAX_ROWS = 5_000_000


class SeriesBudgetExceeded(ValueError):
    """A series query would read or answer more than the budget; the message says how to narrow it."""
