"""Small inline-SVG charts for self-contained HTML reports (no plotting library, no JavaScript).

Every text that reaches the SVG (titles, labels, series names) is escaped here, so callers may pass
user-supplied strings such as feature or category names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 64
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")
MAX_LABEL = 18


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _label(text: str) -> str:
    text = str(text)
    return escape(text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…")


def _frame(title: str, x_label: str, y_label: str, body: list[str], legend: Sequence[str]) -> str:
    plot_w = WIDTH - LEFT - RIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="12" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {TOP + (HEIGHT - TOP - BOTTOM) / 2})">{escape(y_label)}</text>',
        *body,
    ]
    x = LEFT
    for i, name in enumerate(legend):
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="33">{_label(name)}</text>')
        x += 24 + 7 * min(len(str(name)), MAX_LABEL)
    parts.append("</svg>")
    return "\n".join(parts)


def _y_axis(lo: float, hi: float) -> tuple[list[str], float, float]:
    """Gridlines and tick labels; returns them with the axis range actually used."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        lo, hi = (lo, lo + 1.0) if math.isfinite(lo) else (0.0, 1.0)
    plot_h = HEIGHT - TOP - BOTTOM
    out = []
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}</text>')
    return out, lo, hi


def bar_chart_svg(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str,
                  x_label: str = "", y_label: str = "") -> str:
    """Grouped bars: one group per label, one bar per series (e.g. baseline vs current share per bin)."""
    names = list(series)
    values = [float(v) for s in series.values() for v in s if math.isfinite(float(v))]
    grid, lo, hi = _y_axis(0.0, max(values, default=1.0) * 1.1 or 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plot_w / max(len(labels), 1)
    bar = group * 0.8 / max(len(names), 1)
    body = list(grid)
    for g, label in enumerate(labels):
        x0 = LEFT + g * group + group * 0.1
        for s, name in enumerate(names):
            raw = float(series[name][g]) if g < len(series[name]) else 0.0
            v = raw if math.isfinite(raw) else 0.0
            h = plot_h * (v - lo) / (hi - lo)
            body.append(f'<rect x="{x0 + s * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                        f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                        f"<title>{escape(str(name))} {escape(str(label))}: {_fmt(raw)}</title></rect>")
        cx = LEFT + g * group + group / 2
        body.append(f'<text x="{cx:.1f}" y="{TOP + plot_h + 12}" text-anchor="end" '
                    f'transform="rotate(-35 {cx:.1f} {TOP + plot_h + 12})">{_label(label)}</text>')
    return _frame(title, x_label, y_label, body, names)


def line_chart_svg(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, x_label: str, y_label: str,
                   hlines: Mapping[str, float] | None = None) -> str:
    """Lines of (x, y) points, one per series (e.g. a metric per arm over time), with optional labelled
    horizontal reference lines (e.g. a decision boundary)."""
    hlines = dict(hlines or {})
    points = [(float(x), float(y)) for s in series.values() for x, y in s
              if math.isfinite(float(x)) and math.isfinite(float(y))]
    ys = [y for _, y in points] + [v for v in hlines.values() if math.isfinite(v)]
    xs = [x for x, _ in points]
    ylo, yhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = (yhi - ylo) * 0.05 or 0.5
    grid, ylo, yhi = _y_axis(ylo - pad, yhi + pad)
    xlo, xhi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if xhi <= xlo:
        xlo, xhi = xlo - 0.5, xlo + 0.5
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * (x - xlo) / (xhi - xlo)

    def py(y: float) -> float:
        return TOP + plot_h - plot_h * (y - ylo) / (yhi - ylo)

    body = list(grid)
    for i in range(5):
        x = xlo + (xhi - xlo) * i / 4
        body.append(f'<text x="{px(x):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{_fmt(x)}</text>')
    for name, value in hlines.items():
        if math.isfinite(value):
            body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
                        f'stroke="#333" stroke-dasharray="4 3"/>'
                        f'<text x="{WIDTH - RIGHT - 2}" y="{py(value) - 3:.1f}" text-anchor="end">'
                        f"{_label(name)}</text>")
    for s, (name, pts) in enumerate(series.items()):
        clean = [(px(float(x)), py(float(y))) for x, y in pts if math.isfinite(float(x)) and math.isfinite(float(y))]
        colour = PALETTE[s % len(PALETTE)]
        if len(clean) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in clean)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
                        f"<title>{escape(str(name))}</title></polyline>")
        body.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in clean)
    return _frame(title, x_label, y_label, body, list(series))
