"""Where the time of one hook call goes: cProfile of in-process calls (Flask test client, auth off).

``.venv/bin/python -m scripts.bench.profile --shape history --size 2000 --calls 5``
prints the share of each stage of the call (JSON body, schema, patient data, facts and their
fhir.resources validation, rules, cards) and the top functions by own time. cProfile (standard library) adds overhead to
every Python call, so read the shares, not the absolute times (those come from ``make bench``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench import records  # noqa: E402

# Where a call's time goes: cumulative time of named functions (file suffix, function name) as a
# share of the whole call. A function that no longer exists (the code changed) is left out.
STAGES = [
    ("HTTP handler, whole call (routes.call_service)", "api/routes.py", "call_service"),
    ("read + parse the JSON body (json_body.parse_json_body)", "json_body.py", "parse_json_body"),
    ("  of which the nesting pre-check (json_body.nesting_depth)", "json_body.py", "nesting_depth"),
    ("  of which json.loads", "json/decoder.py", "raw_decode"),
    ("request schema (routes._validate_request, marshmallow)", "api/routes.py", "_validate_request"),
    ("patient data (gather.gather_record)", "patient_data/gather.py", "gather_record"),
    ("clinical facts (facts.extract_facts)", "facts/__init__.py", "extract_facts"),
    ("  of which fhir.resources validation (fhir_read.validate)", "facts/fhir_read.py", "validate"),
    ("rules (rules.evaluate_rules)", "rules/__init__.py", "evaluate_rules"),
    ("  of which ClinicalFacts.combined (read by the rules)", "facts/model.py", "combined"),
    ("cards (rendering.CardLibrary.render)", "rendering.py", "render"),
    ("response JSON (flask jsonify)", "flask/json/__init__.py", "jsonify"),
]


def stage_shares(stats: pstats.Stats, total: float) -> list[tuple[str, float]]:
    out = []
    for label, suffix, name in STAGES:
        cum = [ct for (filename, _, func), (_, _, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
               if func == name and filename.endswith(suffix)]
        if cum:
            out.append((label, sum(cum) / total))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="history", choices=records.SHAPES)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)

    from cds_service import create_app  # noqa: PLC0415

    db = Path(tempfile.mkdtemp(prefix="ptsd-cds-profile-")) / "profile.sqlite3"
    app = create_app({"auth": "off", "database": str(db), "log_level": "WARNING"})
    client = app.test_client()
    body = json.dumps(records.patient_view(args.shape, args.size)).encode()
    path = "/cds-services/ptsd-patient-view"
    resp = client.post(path, data=body, content_type="application/json")  # warm-up
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    started = time.perf_counter()
    for _ in range(args.calls):
        client.post(path, data=body, content_type="application/json")
    plain = (time.perf_counter() - started) / args.calls
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.calls):
        client.post(path, data=body, content_type="application/json")
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"patient-view {args.shape} {args.size:,} resources ({len(body) / 1024:,.0f} KiB): "
          f"{plain * 1000:.0f} ms per call without the profiler; {total / args.calls * 1000:.0f} ms with it")
    print("\nshare of the profiled time (cumulative, by stage):")
    shares = stage_shares(stats, total)
    whole = shares[0][1] if shares and shares[0][0].startswith("HTTP handler") else 1.0
    for name, share in shares:  # as a share of the handler's time (the profiler's own total drifts)
        share = share / whole
        print(f"  {share:6.1%}  {name}")
    for key, title in (("tottime", "own time"),):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
        lines = out.getvalue().splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls"))
        print(f"\ntop {args.top} by {title} ({args.calls} calls):")
        print("\n".join(lines[start:start + args.top + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
