"""Inline-SVG charts: well-formed, escaped, and drawing what they are given."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mlops.core.charts import bar_chart_svg, line_chart_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_bar_chart_draws_one_bar_per_label_and_series() -> None:
    svg = bar_chart_svg(["a", "b", "c"], {"baseline": [0.2, 0.5, 0.3], "current": [0.1, 0.1, 0.8]}, title="t")
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6
    heights = [float(r.get("height", 0)) for r in bars]
    assert max(heights) == heights[5]  # current share of "c", the largest value, is the tallest bar


def test_line_chart_has_series_and_boundary_lines() -> None:
    svg = line_chart_svg({"champion": [(0, 0.8), (1, 0.82), (2, 0.81)], "challenger": [(0, 0.7), (1, 0.9)]},
                         title="accuracy per arm", x_label="hour", y_label="accuracy",
                         hlines={"boundary": 0.85})
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    dashed = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 1
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "boundary" in texts
    assert "hour" in texts
    assert "accuracy" in texts


def test_line_chart_boundary_sits_between_points_it_separates() -> None:
    svg = line_chart_svg({"arm": [(0, 0.0), (1, 1.0)]}, title="t", x_label="x", y_label="y", hlines={"h": 0.5})
    root = ET.fromstring(svg)
    dashed = next(line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray"))
    ys = [float(c.get("cy", 0)) for c in root.iter(f"{SVG}circle")]
    assert min(ys) < float(dashed.get("y1", 0)) < max(ys)


def test_user_strings_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    for svg in (bar_chart_svg([evil], {evil: [1.0]}, title=evil, x_label=evil),
                line_chart_svg({evil: [(0, 1), (1, 2)]}, title=evil, x_label=evil, y_label=evil, hlines={evil: 1.5})):
        assert "<script>" not in svg
        ET.fromstring(svg)  # still well-formed XML


def test_empty_and_degenerate_inputs_do_not_break() -> None:
    ET.fromstring(bar_chart_svg([], {}, title="empty"))
    ET.fromstring(line_chart_svg({"flat": [(1, 2.0), (1, 2.0)]}, title="flat", x_label="x", y_label="y"))
    ET.fromstring(line_chart_svg({}, title="none", x_label="x", y_label="y", hlines={"nan": float("nan")}))
