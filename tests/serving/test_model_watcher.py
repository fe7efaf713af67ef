"""The model watcher's failures say what was looked up and what to do."""

from __future__ import annotations

from serving.model_watcher import ModelWatcher


def test_an_empty_alias_names_the_model_and_alias() -> None:
    watcher: ModelWatcher[object] = ModelWatcher(resolve_version=lambda: None, load=lambda v: object(),
                                                 warm_up=lambda s: None, poll_seconds=60, watched="shop@champion")
    outcome = watcher.check_now()
    assert outcome.error == ("the registry has no version under shop@champion: train one (strata train) and "
                             "promote it (strata promote)")
    assert watcher.last_error == outcome.error and not watcher.ready


def test_a_version_is_loaded_and_served() -> None:
    watcher: ModelWatcher[str] = ModelWatcher(resolve_version=lambda: "3", load=lambda v: f"scorer {v}",
                                              warm_up=lambda s: {"warm": s}, poll_seconds=60)
    outcome = watcher.check_now()
    assert outcome.changed and outcome.version == "3" and outcome.error is None
    assert watcher.current is not None and watcher.current.scorer == "scorer 3"
