"""Feedback statistics for ``/feedback`` and ``ptsd-cds feedback-report`` (no patient data).

Input: the store's aggregate rows (contract, cds_service/store): ``feedback_counts()`` rows
``{"topic", "service", "week", "outcome", "reason", "count"}`` and ``issued_counts()`` rows
``{"topic", "service", "week", "count"}``. ``summarise(feedback_rows, issued_rows)`` is a pure
function of those rows; ``collect(store, include_demo=)`` reads them; ``text_report`` and
``csv_report`` print the same figures for the terminal.

Rates: acceptance = accepted / issued, override = overridden / issued, per card kind; a card
with no feedback counts only as issued (most EHRs send feedback for a fraction of cards).
Feedback whose card uuid matches no issued-card record has topic ``None`` ("unknown card").
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

UNKNOWN = "(unknown card)"


@dataclass
class KindStats:
    topic: str
    title: str
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return self.accepted + self.overridden

    @property
    def no_feedback(self) -> int:
        return max(self.issued - self.answered, 0)

    def rate(self, n: int) -> float | None:
        base = max(self.issued, self.answered)
        return n / base if base else None

    @property
    def acceptance_rate(self) -> float | None:
        return self.rate(self.accepted)

    @property
    def override_rate(self) -> float | None:
        return self.rate(self.overridden)


@dataclass
class WeekStats:
    week: str
    issued: int = 0
    accepted: int = 0
    overridden: int = 0


@dataclass
class Summary:
    kinds: list[KindStats]
    reasons: list[dict[str, Any]]  # {"topic", "title", "reason", "display", "count"}
    weeks: list[WeekStats]
    include_demo: bool = False

    @property
    def total_feedback(self) -> int:
        return sum(k.answered for k in self.kinds)

    @property
    def total_issued(self) -> int:
        return sum(k.issued for k in self.kinds)


def summarise(feedback_rows: Iterable[dict[str, Any]], issued_rows: Iterable[dict[str, Any]], *,
              titles: dict[str, str] | None = None, reason_names: dict[str, str] | None = None,
              include_demo: bool = False) -> Summary:
    titles = titles or {}
    reason_names = reason_names or {}
    kinds: dict[str, KindStats] = {}
    weeks: dict[str, WeekStats] = {}

    def kind(topic: str | None) -> KindStats:
        key = topic or UNKNOWN
        if key not in kinds:
            kinds[key] = KindStats(key, titles.get(key, key))
        return kinds[key]

    def week(name: str) -> WeekStats:
        return weeks.setdefault(name, WeekStats(name))

    for row in issued_rows:
        n = int(row["count"])
        kind(row.get("topic")).issued += n
        week(str(row["week"])).issued += n
    reason_counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in feedback_rows:
        n = int(row["count"])
        k = kind(row.get("topic"))
        w = week(str(row["week"]))
        if row["outcome"] == "accepted":
            k.accepted += n
            w.accepted += n
        elif row["outcome"] == "overridden":
            k.overridden += n
            w.overridden += n
            reason = row.get("reason") or "(no reason given)"
            k.reasons[reason] = k.reasons.get(reason, 0) + n
            reason_counts[(k.topic, reason)] += n
    order = list(titles)
    ordered = sorted(kinds.values(), key=lambda k: (order.index(k.topic) if k.topic in order else len(order), k.topic))
    reasons = [{"topic": t, "title": titles.get(t, t), "reason": r, "display": reason_names.get(r, r), "count": n}
               for (t, r), n in sorted(reason_counts.items(), key=lambda item: (-item[1], item[0]))]
    return Summary(ordered, reasons, [weeks[w] for w in sorted(weeks)], include_demo)


def collect(store: Any, *, include_demo: bool = False, titles: dict[str, str] | None = None,
            reason_names: dict[str, str] | None = None) -> Summary:
    """Read the aggregate rows from the store (raises the store's StoreUnavailable)."""
    return summarise(store.feedback_counts(include_demo=include_demo),
                     store.issued_counts(include_demo=include_demo),
                     titles=titles, reason_names=reason_names, include_demo=include_demo)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


# --- terminal and CSV -------------------------------------------------------------------------
def text_report(summary: Summary) -> str:
    out = [f"Card feedback ({'including' if summary.include_demo else 'excluding'} demo data): "
           f"{summary.total_issued} cards issued, {summary.total_feedback} feedback items", ""]
    header = f"{'card kind':<38} {'issued':>7} {'accepted':>9} {'overridden':>11} {'accept %':>9} {'override %':>11}"
    out += ["Per card kind", header, "-" * len(header)]
    for k in summary.kinds:
        out.append(f"{k.topic[:38]:<38} {k.issued:>7} {k.accepted:>9} {k.overridden:>11} "
                   f"{percent(k.acceptance_rate):>9} {percent(k.override_rate):>11}")
    out += ["", "Override reasons", f"{'card kind':<38} {'reason':<32} {'count':>6}", "-" * 78]
    for r in summary.reasons:
        out.append(f"{r['topic'][:38]:<38} {r['reason'][:32]:<32} {r['count']:>6}")
    if not summary.reasons:
        out.append("(none)")
    out += ["", "Per week", f"{'week':<10} {'issued':>7} {'accepted':>9} {'overridden':>11}", "-" * 40]
    for w in summary.weeks:
        out.append(f"{w.week:<10} {w.issued:>7} {w.accepted:>9} {w.overridden:>11}")
    if not summary.weeks:
        out.append("(none)")
    return "\n".join(out) + "\n"


CSV_FIELDS = ["table", "card_kind", "reason", "week", "issued", "accepted", "overridden", "count",
              "acceptance_rate", "override_rate"]


def csv_report(summary: Summary) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()

    def rate(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    for k in summary.kinds:
        writer.writerow({"table": "card_kind", "card_kind": k.topic, "issued": k.issued, "accepted": k.accepted,
                         "overridden": k.overridden, "acceptance_rate": rate(k.acceptance_rate),
                         "override_rate": rate(k.override_rate)})
    for r in summary.reasons:
        writer.writerow({"table": "override_reason", "card_kind": r["topic"], "reason": r["reason"], "count": r["count"]})
    for w in summary.weeks:
        writer.writerow({"table": "week", "week": w.week, "issued": w.issued, "accepted": w.accepted,
                         "overridden": w.overridden})
    return buf.getvalue()
