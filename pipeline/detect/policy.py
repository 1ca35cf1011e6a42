"""How a window's per-feature exceedances become a score, a detector name and a sentence.

A feature *exceedance* is how far a tenant's window value sits above the population's
median, in units of the distance from the median to the population's high quantile at the
same age: 1.0 means "at the 99th percentile of tenants", 3.0 "three times as far out".
Only the direction that means extraction counts (more novelty, more templating; never
less). The tenant score is the largest exceedance; the detector name lists the signal
groups whose exceedance passed the alert threshold.

>>> describe("nov12", 0.92, 0.30, 50, 1000)
'put 46 of its last 50 queries in embedding regions it had never reached (92%), 3.1x the 99th percentile of tenants at 1,000 queries (30%)'
"""
from __future__ import annotations

GROUPS = {
    "nov8": "coverage", "nov12": "coverage", "nov14": "coverage", "growth": "coverage",
    "newp": "coverage", "near": "neighbours", "nn": "neighbours", "tmpl": "template",
    "cot": "cot", "drift": "drift", "hst": "population", "out_tok": "tokens",
    "rate": "timing", "regular": "timing",
}

_PHRASES = {
    "nov8": "put {k} of its last {w} queries in broad embedding regions it had never reached",
    "nov12": "put {k} of its last {w} queries in embedding regions it had never reached",
    "nov14": "put {k} of its last {w} queries in fine embedding regions it had never reached",
    "newp": "sent {k} never-before-seen prompts in its last {w} queries",
    "near": "sent {k} of its last {w} queries as near-duplicates of its recent queries",
    "tmpl": "filled one prompt template in {k} of its last {w} queries",
    "cot": "asked for step-by-step reasoning in {k} of its last {w} queries",
}


def describe(feature: str, value: float, p99: float, window: int, n: int) -> str:
    """One sentence with the numbers that fired, compared with the population."""
    ratio = value / p99 if p99 > 0 else float("inf")
    times = f"{ratio:,.1f}x" if ratio != float("inf") else "far above"
    tail = f"{times} the 99th percentile of tenants at {n:,} queries"
    if feature in _PHRASES:
        k = round(value * window)
        head = _PHRASES[feature].format(k=k, w=window)
        return f"{head} ({value:.0%}), {tail} ({p99:.0%})"
    if feature == "growth":
        return (f"kept reaching new embedding regions as it grew (distinct regions ~ queries^"
                f"{value:.2f} over {n:,} queries), {tail} (^{p99:.2f})")
    if feature == "drift":
        return (f"moved away from its own history: its rate of new regions rose by "
                f"{value:.0%} over its usual level, {tail} ({p99:.0%})")
    if feature == "nn":
        return (f"sent queries {value:.0%} of the maximum distance from its nearest recent "
                f"query, {tail} ({p99:.0%})")
    if feature == "hst":
        return (f"had a window summary the population model finds unusual (score "
                f"{value:.2f}), {tail} ({p99:.2f})")
    return f"had {feature} at {value:.2f}, {tail} ({p99:.2f})"
