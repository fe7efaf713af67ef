"""The HTML report: every section renders, charts are embedded, nothing is loaded from the network."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.errors import StrataError
from features.layers import assign_layers
from serving.report import Report, Section, build_report, layer_sections, table_html

CONFIG = StrataConfig()
AS_OF = pd.Timestamp("2024-06-30", tz="UTC")
LAYER_SECTION_IDS = ["overview", "alerts", "layer-sizes", "migration", "kpis", "distributions"]


class PageParser(HTMLParser):
    """Collects what matters: attributes of every tag, scripts, sections and their first heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.script_bodies: list[str] = []
        self.sections: list[str] = []
        self.first_heading: dict[str, str] = {}
        self.tags: list[str] = []
        self._in_script = False
        self._pending: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "data", "action", "poster", "srcset") and value is not None:
                self.urls.append((tag, name, value))
            if name == "style" and value and "url(" in value:
                self.urls.append((tag, name, value))
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
            self.script_bodies.append("")
        if tag == "section":
            self.sections.append(str(a.get("id")))
            self._pending = str(a.get("id"))
        elif self._pending is not None:
            # The first element of a section must be its <h2>.
            self.first_heading[self._pending] = tag
            self._pending = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies[-1] += data


def parse(page: str) -> PageParser:
    p = PageParser()
    p.feed(page)
    p.close()
    return p


def assert_offline(page: str) -> PageParser:
    p = parse(page)
    external = [u for u in p.urls if re.match(r"^\s*(https?:)?//", u[2], re.IGNORECASE) or "url(" in u[2]]
    assert external == [], external
    assert all(s.get("src") is None for s in p.scripts), "no external script"
    assert not {"link", "iframe", "object", "embed", "base"} & set(p.tags)
    assert all(u[2].startswith(("data:", "#")) for u in p.urls), "only inline data and in-page anchors"
    assert "@import" not in page
    return p


def random_features(n: int, as_of: pd.Timestamp, seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    orders = np.where(rng.random(n) < 0.3, 0, rng.geometric(0.3, n)).astype(float)
    buyer = orders > 0
    aov = np.where(buyer, rng.lognormal(5, 1, n), np.nan)
    spend_total = np.where(buyer, orders * aov, 0.0)
    share_365 = rng.uniform(0, 1, n)
    return pd.DataFrame(
        {
            "user_id": [f"u{i:05d}" for i in range(n)],
            "as_of": as_of,
            "orders_total": orders,
            "orders_90d": np.floor(orders * share_365 * 0.4),
            "orders_365d": np.floor(orders * share_365),
            "spend_total": spend_total,
            "spend_365d": spend_total * share_365,
            "avg_order_value": aov,
            "days_since_last_order": np.where(buyer, rng.uniform(0, 500, n), np.nan),
            "days_since_last_interaction": rng.uniform(0, 200, n),
            "gap_mean_days": np.where(orders >= 2, rng.uniform(5, 120, n), np.nan),
            "trend_orders_ratio": rng.choice([0.25, 0.5, 1.0, 2.0], n),
            "trend_spend_ratio": rng.uniform(0.1, 3, n),
            "active_days_30d": rng.integers(0, 31, n).astype(float),
        }
    )


@pytest.fixture(scope="module")
def two_cutoffs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    prev = random_features(1500, AS_OF - pd.Timedelta(days=30), seed=1)
    curr = random_features(1600, AS_OF, seed=2)  # 100 users appear
    return curr, assign_layers(curr, CONFIG), prev, assign_layers(prev, CONFIG)


def test_report_has_every_section_embedded_charts_and_no_network(two_cutoffs) -> None:  # type: ignore[no-untyped-def]
    curr, layers, prev, prev_layers = two_cutoffs
    report = Report("Strata test report", AS_OF, meta={"previous cutoff": "2024-05-31"})
    report.extend(layer_sections(curr, layers, CONFIG, prev_features=prev, prev_layers=prev_layers))
    page = report.render(generated_at=pd.Timestamp("2024-07-01 08:30", tz="UTC"))
    p = assert_offline(page)
    assert p.sections == LAYER_SECTION_IDS
    assert all(p.first_heading[s] == "h2" for s in LAYER_SECTION_IDS)
    # plotly.js inline exactly once, and one chart per layer dimension in sizes and migration, 4 distributions
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    assert page.count(js[:2000]) == 1
    assert sum(js[:2000] in body for body in p.script_bodies) == 1
    n_plots = page.count("Plotly.newPlot(")
    assert n_plots == 4 + 4 + 4
    for dim in ("lifecycle", "rfm_segment", "value_tier", "activity_tier"):
        assert f'id="fig-sizes-{dim}"' in page and f'id="fig-migration-{dim}"' in page
    # header: as_of and generated-at; bilingual names; readable numbers
    assert "2024-06-30" in page and "2024-07-01 08:30 UTC" in page and "2024-05-31" in page
    for name in ("重要价值 Important value", "流失 Churned", "沉睡 Sleeping", "高价值 High value"):
        assert name in page
    assert "1,600" in page  # users, thousands separator
    assert re.search(r"\d+\.\d%", page) and re.search(r"[+-]\d+\.\d pp", page)
    assert 'class="chg good"' in page and 'class="chg bad"' in page


def test_migration_heatmap_counts_both_populations(two_cutoffs) -> None:  # type: ignore[no-untyped-def]
    curr, layers, prev, prev_layers = two_cutoffs
    page = build_report(
        layer_sections(curr, layers, CONFIG, prev_features=prev, prev_layers=prev_layers), "t", AS_OF
    )
    assert "new 新增 100" in page and "gone 离开 0" in page


def test_report_without_previous_cutoff(two_cutoffs) -> None:  # type: ignore[no-untyped-def]
    curr, layers, _, _ = two_cutoffs
    page = build_report(layer_sections(curr, layers, CONFIG), "t", AS_OF)
    p = assert_offline(page)
    assert p.sections == LAYER_SECTION_IDS
    assert "migration needs two scorings" in page and "alerts compare two cutoffs" in page


def test_sections_are_extensible_and_validated() -> None:
    report = Report("r", AS_OF)
    report.add_section("model-quality", "Model quality 模型质量", table_html(pd.DataFrame({"auc": [0.8123]})))
    with pytest.raises(StrataError, match="already added"):
        report.add_section("model-quality", "again", "")
    with pytest.raises(StrataError, match="section id"):
        Section("bad id", "t", "")
    page = report.render()
    assert '<section id="model-quality">\n<h2>Model quality 模型质量</h2>' in page
    assert "0.81" in page
    assert "Plotly" not in page  # no chart, no plotly.js
    with pytest.raises(StrataError, match="duplicate section id"):
        build_report([Section("a", "x", ""), Section("a", "y", "")], "t", AS_OF)


def test_table_html_escapes_and_formats() -> None:
    df = pd.DataFrame({"name": ["<script>alert(1)</script>"], "n": [1234567], "x": [float("nan")]})
    out = table_html(df)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "1,234,567" in out and "n/a" in out


def test_report_from_generated_dataset(demo_dataset: Dataset) -> None:
    from features.pipeline import DuckDBEngine

    as_of = pd.Timestamp("2024-12-31", tz="UTC")
    with DuckDBEngine(demo_dataset) as engine:
        curr = engine.features(as_of, CONFIG)
        prev = engine.features(as_of - pd.Timedelta(days=30), CONFIG)
    layers, prev_layers = assign_layers(curr, CONFIG), assign_layers(prev, CONFIG)
    report = Report("demo", as_of)
    report.extend(layer_sections(curr, layers, CONFIG, prev_features=prev, prev_layers=prev_layers))
    page = report.render()
    p = assert_offline(page)
    assert p.sections == LAYER_SECTION_IDS
    assert page.count("Plotly.newPlot(") == 12
    assert f"{len(curr):,}" in page


@pytest.mark.parametrize(
    "bad",
    [
        '<script src="https://cdn.plot.ly/plotly.min.js"></script>',
        '<link rel="stylesheet" href="https://example.com/a.css">',
        '<img src="//example.com/a.png">',
        '<div style="background: url(https://example.com/a.png)"></div>',
    ],
)
def test_offline_checker_catches_external_resources(bad: str) -> None:
    page = build_report([Section("x", "x", bad)], "t", AS_OF)
    with pytest.raises(AssertionError):
        assert_offline(page)
