"""The project's own code systems (canonical URIs in one place)."""

BASE = "http://ptsd-cds.org/fhir/CodeSystem"

# source.topic of every card: which kind of card it is (codes listed in cards/*.toml).
CARD_TOPIC = f"{BASE}/card-topic"
# Trauma-focused psychotherapies: prolonged-exposure | cognitive-processing-therapy | emdr
PSYCHOTHERAPY = f"{BASE}/trauma-focused-psychotherapy"
# Override reasons offered on safety cards.
OVERRIDE_REASON = f"{BASE}/override-reason"
