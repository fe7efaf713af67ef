"""Checks of a command's cutoff against the data it reads, shared by ``strata layers``, ``report`` and ``score``.

* **No user known** at or before a cutoff (an ``--as-of`` or ``--previous`` before every order, event and
  join): the command would write an empty output, replace the online store with nothing, or compare with
  nothing (a false all-clear). :func:`require_users` raises a :class:`~features.errors.StrataError` (exit 2)
  naming the cutoff and where the data starts.
* **Data that ended long before the cutoff**: an ``--as-of`` more than :data:`STALE_AFTER_DAYS` days after the
  last order or event. Every user then looks lapsed (long recency, empty recent windows), so churn risks go
  to 1 and lifecycles to churned. :func:`warn_if_stale` prints a warning on stderr naming the last data date;
  the command still runs (scoring an old extract on purpose is allowed).

Why 30 days: it is the shortest feature window (``features.windows_days``) and the default step back to
``--previous``; past it, every user's most recent window is empty whatever they did. A daily or weekly
data refresh never trips it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from features.errors import StrataError

if TYPE_CHECKING:
    import pandas as pd


#: An ``--as-of`` more than this many days after the last order or event gets a warning.
STALE_AFTER_DAYS = 30


def last_activity_from_features(features: pd.DataFrame, as_of: pd.Timestamp) -> pd.Timestamp | None:
    """The latest order or event a feature table as of ``as_of`` has seen: ``as_of`` minus the smallest
    ``days_since_last_order`` / ``days_since_last_event`` of any user (None when neither column has a value).

    For a precomputed table (``strata score --features``), where the raw data is not at hand.
    """
    import numpy as np
    import pandas as pd

    days: list[float] = []
    for name in ("days_since_last_order", "days_since_last_event"):
        if name not in features.columns:
            continue
        values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
        if len(values) and not np.isnan(values).all():
            days.append(float(np.nanmin(values)))
    if not days:
        return None
    return as_of - pd.Timedelta(days=min(days))


def no_user_message(cutoff: str, first: pd.Timestamp | None, consequence: str, fix: str) -> str:
    """``no user is known at or before <cutoff> (the data starts at <first>): <consequence>; <fix>`` (the part in
    parentheses only when ``first`` is known)."""
    since = f" (the data starts at {first.isoformat()})" if first is not None else ""
    return f"no user is known at or before {cutoff}{since}: {consequence}; {fix}"


def require_users(features: pd.DataFrame, cutoff: str, first: pd.Timestamp | None, consequence: str,
                  fix: str) -> None:
    """Raise :class:`StrataError` (:func:`no_user_message`) when ``features`` (the users known at ``cutoff``,
    e.g. ``"--as-of 2000-01-01T00:00:00+00:00"``) has no row; ``first`` is where the data starts."""
    if not len(features):
        raise StrataError(no_user_message(cutoff, first, consequence, fix))


def stale_message(as_of: pd.Timestamp, last: pd.Timestamp | None, source: str = "the data") -> str | None:
    """The warning for an ``--as-of`` more than :data:`STALE_AFTER_DAYS` days after ``last`` (the last order or
    event of ``source``), or None when it is not."""
    import pandas as pd

    if last is None or as_of - last <= pd.Timedelta(days=STALE_AFTER_DAYS):
        return None
    gap = (as_of - last) / pd.Timedelta(days=1)
    return (f"--as-of {as_of.isoformat()} is {gap:,.0f} days after the last order or event in {source} "
            f"({last.isoformat()}; more than {STALE_AFTER_DAYS} days): every user looks lapsed, so churn risks "
            f"and lifecycles read as churned; check --as-of, or refresh the data")


def warn_if_stale(as_of: pd.Timestamp, last: pd.Timestamp | None, source: str = "the data") -> bool:
    """Print :func:`stale_message` as a warning on stderr when there is one; returns whether it was printed."""
    from rich.markup import escape

    from strata_cli.app import err_console

    message = stale_message(as_of, last, source)
    if message is None:
        return False
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return True
