"""The one sentence an alert carries: the numbers that fired, compared with the population.

A rule fires on several features at once (see :data:`pipeline.detect.coverwatch.RULES`);
the sentence leads with the first and adds the others as short clauses. Values are window
shares (0..1) unless the feature says otherwise; ``p90`` is the population's 90th
percentile for tenants of the same age.

>>> describe([("spread", 0.88, 0.55), ("newp", 1.0, 0.8)], 50, 1000)
'spread its last 50 queries over 44 broad topics (88%), 1.6x the 90th percentile of tenants at 1,000 queries (55%), and 100% of them were prompts it had never sent (p90 80%)'
>>> describe([("growth", 0.97, 0.8), ("rare", 0.3, 0.1)], 50, 400)
'kept reaching new embedding regions (coverage growth 0.97; 1.00 = every query somewhere new), 1.2x the 90th percentile of tenants at 400 queries (0.80), and 30% landed in regions few tenants ever reach (p90 10%)'
>>> describe([("cot", 1.0, 0.0)], 50, 100)
'asked for step-by-step reasoning in 50 of its last 50 queries (100%), far above the 90th percentile of tenants at 100 queries (0%)'

A feature the population has no figure for yet (NaN p90: the prior leaves the rare-cell
share out) is stated without a comparison, never as "p90 nan%":

>>> describe([("newp", 0.88, 0.54), ("rare", 0.14, float("nan"))], 50, 1600)
'sent 44 never-before-seen prompts in its last 50 queries (88%), 1.6x the 90th percentile of tenants at 1,600 queries (54%), and 14% landed in regions few tenants ever reach'
>>> describe([("growth", 0.9, float("nan"))], 50, 100)
'kept reaching new embedding regions (coverage growth 0.90; 1.00 = every query somewhere new), with no population figure yet for tenants at 100 queries'
"""
from __future__ import annotations

import math

_LEAD = {
    "nov8": "put {k} of its last {w} queries in broad embedding regions it had never reached",
    "nov12": "put {k} of its last {w} queries in embedding regions it had never reached",
    "nov14": "put {k} of its last {w} queries in fine embedding regions it had never reached",
    "spread": "spread its last {w} queries over {k} broad topics",
    "spread6": "spread its last {w} queries over {k} coarse topics",
    "newp": "sent {k} never-before-seen prompts in its last {w} queries",
    "fresh": "sent {k} new prompts into regions it had never reached in its last {w} queries",
    "tmpl": "filled one prompt template in {k} of its last {w} queries",
    "cot": "asked for step-by-step reasoning in {k} of its last {w} queries",
    "newclient": "sent {k} of its last {w} queries from a client it had not used before",
    "clientnovel": ("sent {k} of its last {w} queries from a client it had not used before "
                    "into embedding regions it had never reached"),
}
_CLAUSE = {
    "newp": "{v:.0%} of them were prompts it had never sent",
    "spread6": "they covered {k} coarse topics",
    "rare": "{v:.0%} landed in regions few tenants ever reach",
    "xspread": "its breadth rose {v:.0%} over its own usual level",
    "fresh": "{v:.0%} were new prompts in regions it had never reached",
    "spread": "they covered {k} broad topics",
    "nov14": "{v:.0%} landed in regions it had never reached",
    "cot": "{v:.0%} asked for step-by-step reasoning",
    "newclient": "{v:.0%} came from a client it had not used before",
}


def _tokens(value: float) -> float:
    return math.expm1(value * math.log(8192.0))


def _ratio(value: float, p90: float) -> str:
    return f"{value / p90:,.1f}x" if p90 > 0 else "far above"


def _lead(feature: str, value: float, p90: float, window: int, n: int) -> str:
    """The fired feature stated, then compared with the population's p90 for tenants this
    old (or said to have no figure yet: NaN p90)."""
    if feature in _LEAD:
        head = f"{_LEAD[feature].format(k=round(value * window), w=window)} ({value:.0%})"
        shown = f"{p90:.0%}"
    elif feature == "out_tok":
        head = (f"drew answers averaging {_tokens(value):,.0f} output tokens over its last "
                f"{window} queries")
        value, p90, shown = _tokens(value), _tokens(p90), f"{_tokens(p90):,.0f}"
    elif feature == "growth":
        head = (f"kept reaching new embedding regions (coverage growth {value:.2f}; 1.00 = "
                f"every query somewhere new)")
        shown = f"{p90:.2f}"
    elif feature == "cdrift":
        head = (f"moved away from its own past content (MMD drift {value:.2f} on a 0-1 "
                f"scale) in its last {window} queries")
        shown = f"{p90:.2f}"
    elif feature == "xnov":
        head = (f"put {round(value * window)} more of its last {window} queries in fine "
                f"embedding regions it had never reached than its own usual level "
                f"(+{value:.0%})")
        shown = f"+{p90:.0%}"
    elif feature == "drift":
        head = (f"moved away from its own history: its rate of new regions rose by "
                f"{value:.0%} over its usual level")
        shown = f"{p90:.0%}"
    else:
        head, shown = f"had {feature} at {value:.2f}", f"{p90:.2f}"
    if not math.isfinite(p90):
        return f"{head}, with no population figure yet for tenants at {n:,} queries"
    return f"{head}, {_ratio(value, p90)} the 90th percentile of tenants at {n:,} queries ({shown})"


def _clause(feature: str, value: float, p90: float, window: int) -> str:
    if feature == "out_tok":
        text, shown = f"answers averaged {_tokens(value):,.0f} output tokens", f"{_tokens(p90):,.0f}"
    elif feature in _CLAUSE:
        text = _CLAUSE[feature].format(v=value, k=round(value * window))
        # a count is compared with a count: "31 coarse topics (p90 29)", not "(p90 58%)"
        shown = (f"{round(p90 * window)}" if "{k}" in _CLAUSE[feature] and math.isfinite(p90)
                 else f"{p90:.0%}")
    else:
        text, shown = f"{feature} was {value:.2f}", f"{p90:.2f}"
    return f"{text} (p90 {shown})" if math.isfinite(p90) else text


def describe(fired: list[tuple[str, float, float]], window: int, n: int) -> str:
    """One sentence (no final full stop) from ``[(feature, value, p90), ...]``."""
    (f0, v0, p0), rest = fired[0], fired[1:]
    text = _lead(f0, v0, p0, window, n)
    if rest:
        clauses = [_clause(f, v, p, window) for f, v, p in rest]
        text += ", and " + " and ".join(clauses) if len(clauses) == 1 else \
            ", and " + ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return text
