"""Small server-rendered SVG bar charts for ``/feedback`` (no JavaScript, no chart library).

Each chart is ``role="img"`` with a ``<title>``/``<desc>`` text alternative; the page shows the
same numbers in a table next to it. Colours meet WCAG contrast against white and are paired with
patterns of position and a legend, so colour is never the only cue. Hand-written because the
charts are three bar charts: a vendored chart library would be heavier than the code.
"""

from __future__ import annotations

from markupsafe import Markup, escape

COLOURS = {"accepted": "#1a7f37", "overridden": "#b42318", "none": "#6e7781", "issued": "#0b5cad"}
ROW = 28
LABEL_W = 390
BAR_W = 420


def _svg(height: int, title: str, desc: str, body: list[str], chart_id: str) -> Markup:
    width = LABEL_W + BAR_W + 80
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'viewBox="0 0 {width} {height}" width="100%" class="chart">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def _label(y: int, text: str) -> str:
    return (f'<text x="{LABEL_W - 8}" y="{y + ROW // 2 + 4}" text-anchor="end" class="chart-label">'
            f'{escape(text if len(text) <= 52 else text[:51] + "…")}</text>')


def stacked_rates(kinds, chart_id: str = "kinds") -> Markup:
    """Per card kind: accepted / overridden / no feedback, as shares of the cards issued."""
    body, desc = [], []
    for i, k in enumerate(kinds):
        y = 10 + i * ROW
        base = max(k.issued, k.answered) or 1
        x = LABEL_W
        body.append(_label(y, k.title))
        for part, n in (("accepted", k.accepted), ("overridden", k.overridden), ("none", k.no_feedback)):
            w = BAR_W * n / base
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{ROW - 8}" '
                            f'fill="{COLOURS[part]}"><title>{escape(k.title)}: {part} {n}</title></rect>')
            x += w
        body.append(f'<text x="{LABEL_W + BAR_W + 6}" y="{y + ROW // 2 + 4}" class="chart-value">'
                    f'{k.accepted}/{k.overridden}/{k.issued}</text>')
        desc.append(f"{k.title}: {k.accepted} accepted, {k.overridden} overridden, {k.issued} issued")
    height = 20 + max(len(kinds), 1) * ROW
    return _svg(height, "Acceptance and override per card kind",
                "; ".join(desc) or "No cards issued yet", body, chart_id)


def bars(rows: list[tuple[str, int]], title: str, colour: str, chart_id: str) -> Markup:
    """One bar per (label, count)."""
    body, desc = [], []
    top = max((n for _, n in rows), default=0) or 1
    for i, (label, n) in enumerate(rows):
        y = 10 + i * ROW
        body.append(_label(y, label))
        body.append(f'<rect x="{LABEL_W}" y="{y + 4}" width="{BAR_W * n / top:.1f}" height="{ROW - 8}" '
                    f'fill="{COLOURS[colour]}"><title>{escape(label)}: {n}</title></rect>')
        body.append(f'<text x="{LABEL_W + BAR_W * n / top + 6:.1f}" y="{y + ROW // 2 + 4}" '
                    f'class="chart-value">{n}</text>')
        desc.append(f"{label}: {n}")
    height = 20 + max(len(rows), 1) * ROW
    return _svg(height, title, "; ".join(desc) or "No data yet", body, chart_id)


def weekly(weeks, chart_id: str = "weeks") -> Markup:
    """Per ISO week: issued, accepted, overridden as three thin bars."""
    body, desc = [], []
    top = max((max(w.issued, w.accepted, w.overridden) for w in weeks), default=0) or 1
    group = ROW + 14
    for i, w in enumerate(weeks):
        y = 10 + i * group
        body.append(_label(y + 6, w.week))
        for j, (part, n) in enumerate((("issued", w.issued), ("accepted", w.accepted), ("overridden", w.overridden))):
            width = BAR_W * n / top
            body.append(f'<rect x="{LABEL_W}" y="{y + j * 12}" width="{width:.1f}" height="10" '
                        f'fill="{COLOURS[part]}"><title>{w.week}: {part} {n}</title></rect>')
        body.append(f'<text x="{LABEL_W + BAR_W + 6}" y="{y + 20}" class="chart-value">'
                    f'{w.issued}/{w.accepted}/{w.overridden}</text>')
        desc.append(f"{w.week}: {w.issued} issued, {w.accepted} accepted, {w.overridden} overridden")
    height = 20 + max(len(weeks), 1) * group
    return _svg(height, "Cards and feedback per week", "; ".join(desc) or "No data yet", body, chart_id)
