"""Follow the registry's ``champion`` alias and swap the served model without downtime.

A :class:`ModelWatcher` holds the served model as one immutable :class:`LiveModel`. A request reads
``watcher.current`` once and uses that object to the end, so a swap (rebinding one attribute, atomic in
Python) never changes the model under a request in flight: in-flight requests finish on the old
version, new ones start on the new one, and the old scorer is freed when its last request ends.

A new version is loaded and warmed up (one real prediction) *before* it is swapped in; if loading or
warming up fails, the old version keeps serving and the error is kept for ``/metadata`` and the logs.
Until a first version has loaded and warmed up, :attr:`ModelWatcher.ready` is False, so ``/readyz``
never reports ready on a failed load (e.g. an empty registry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

S = TypeVar("S")


@dataclass(frozen=True)
class LiveModel(Generic[S]):
    """One loaded, warmed-up model version: never mutated after the swap."""

    scorer: S
    version: str
    loaded_at: datetime
    extra: Any = None
    """Per-version state built at load time (e.g. a prediction cache), swapped with the scorer."""


@dataclass(frozen=True)
class ReloadOutcome:
    """What one check of the alias did."""

    changed: bool
    version: str | None
    previous_version: str | None
    error: str | None = None


class ModelWatcher(Generic[S]):
    """Poll the alias every ``poll_seconds`` and swap in a new version when it moves.

    Parameters
    ----------
    resolve_version
        Returns the version the alias points at now (None when the alias or model does not exist).
    load
        Loads the scorer of a version.
    warm_up
        Runs one real prediction with a freshly loaded scorer (raises on failure) and returns the
        per-version ``extra`` state kept in :class:`LiveModel`.
    poll_seconds
        Seconds between two checks of the alias (the first check happens at :meth:`start`).
    after_swap
        Called with the new :class:`LiveModel` right after it is swapped in (errors are logged).
    watched
        What ``resolve_version`` looks up, for messages (e.g. ``strata@champion``).
    """

    def __init__(
        self,
        *,
        resolve_version: Callable[[], str | None],
        load: Callable[[str], S],
        warm_up: Callable[[S], Any],
        poll_seconds: float,
        after_swap: Callable[[LiveModel[S]], None] | None = None,
        watched: str = "the alias",
    ) -> None:
        self._resolve_version = resolve_version
        self.watched = watched
        self._load = load
        self._warm_up = warm_up
        self._after_swap = after_swap
        self.poll_seconds = poll_seconds
        self._current: LiveModel[S] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_check: datetime | None = None

    @property
    def current(self) -> LiveModel[S] | None:
        """The served model (None until the first successful load); read it once per request."""
        return self._current

    @property
    def ready(self) -> bool:
        """True once a version has been loaded and has passed its warm-up prediction."""
        return self._current is not None

    def check_now(self) -> ReloadOutcome:
        """Look up the alias and, if it moved, load, warm up and swap in the new version.

        Returns what happened; a failure leaves the served version unchanged and is reported in
        :attr:`ReloadOutcome.error` (and :attr:`last_error`), never raised.
        """
        with self._lock:
            previous = self._current.version if self._current is not None else None
            self.last_check = datetime.now(UTC)
            try:
                target = self._resolve_version()
            except Exception as err:  # noqa: BLE001  (registry down: keep serving what we have)
                return self._failed(previous, f"cannot read the model registry: {err}")
            if target is None:
                return self._failed(previous, f"the registry has no version under {self.watched}: train one "
                                              "(strata train) and promote it (strata promote)")
            if target == previous:
                self.last_error = None
                return ReloadOutcome(changed=False, version=previous, previous_version=previous)
            try:
                scorer = self._load(target)
                extra = self._warm_up(scorer)
            except Exception as err:  # noqa: BLE001  (a bad version must not take the service down)
                logger.exception("loading model version %s failed; still serving %s", target, previous)
                return self._failed(previous, f"loading version {target} failed: {err}")
            self._current = LiveModel(scorer=scorer, version=target, loaded_at=datetime.now(UTC), extra=extra)
            self.last_error = None
            logger.info("now serving model version %s (was %s)", target, previous)
            if self._after_swap is not None:
                try:
                    self._after_swap(self._current)
                except Exception:  # noqa: BLE001  (the new version is in; a failed hook must not undo it)
                    logger.exception("after-swap hook failed")
            return ReloadOutcome(changed=True, version=target, previous_version=previous)

    def refresh_extra(self, build: Callable[[LiveModel[S]], Any]) -> None:
        """Rebuild the per-version ``extra`` state of the served version (e.g. after a store update)."""
        with self._lock:
            live = self._current
            if live is None:
                return
            extra = build(live)
            self._current = LiveModel(scorer=live.scorer, version=live.version, loaded_at=live.loaded_at,
                                      extra=extra)

    def _failed(self, previous: str | None, message: str) -> ReloadOutcome:
        if message != self.last_error:
            logger.warning("%s", message)
        self.last_error = message
        return ReloadOutcome(changed=False, version=previous, previous_version=previous, error=message)

    def start(self, on_tick: Callable[[], None] | None = None) -> None:
        """Start the background poller (a daemon thread); the first check runs immediately.

        ``on_tick`` (optional) runs after each check, e.g. to notice online-store updates.
        """
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.is_set():
                self.check_now()
                if on_tick is not None:
                    try:
                        on_tick()
                    except Exception:  # noqa: BLE001
                        logger.exception("periodic task failed")
                self._stop.wait(self.poll_seconds)

        self._thread = threading.Thread(target=run, name="strata-model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the poller and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_ready(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until a model is served; True if one is."""
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ready
