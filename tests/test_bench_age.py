"""bench age: a tenant's first alert is found at the right window, an attacker's only after
its attack starts, and leaving the first window unjudged drops first-window catches."""
import numpy as np

from pipeline.bench.alert_age import first_alert, tally


def w(k, seen, *scores):
    return (k, seen, np.asarray(scores, dtype=float))


def test_first_alert_is_the_first_window_at_or_above_one():
    seq = [w(1, 50, 0.2, 0.9), w(2, 100, 0.1, 1.3), w(3, 150, 1.5, 0.0)]
    assert first_alert(seq, {"is_attack": False}) == (2, 1)
    assert first_alert(seq[:1], {"is_attack": False}) is None


def test_an_attacker_counts_only_after_its_attack_starts():
    seq = [w(1, 50, 0.0, 1.2), w(2, 100, 0.0, 0.5), w(3, 150, 1.1, 0.0)]
    assert first_alert(seq, {"is_attack": True, "attack_start_index": 60}) == (3, 0)
    assert first_alert(seq, {"is_attack": True, "attack_start_index": None}) == (1, 1)


def test_leaving_the_first_window_unjudged_drops_first_window_catches():
    seq = {"a": [w(1, 50, 0.0, 2.0), w(2, 100, 0.0, 0.4)],
           "b": [w(1, 50, 0.0, 0.1), w(2, 100, 0.0, 0.4), w(20, 1000, 0.0, 1.0)],
           "c": [w(1, 50, 0.0, 1.5)]}
    labels = {"a": {"is_attack": True, "hard_negative": False},
              "b": {"is_attack": True, "hard_negative": False},
              "c": {"is_attack": False, "hard_negative": False}}
    full, late = tally(seq, labels), tally(seq, labels, skip_first=True)
    assert full["attack"]["flagged"] == 2 and full["ordinary"]["flagged"] == 1
    assert full["attack"]["by_first_window"] == {"1:coverage": 1, "16+:coverage": 1}
    assert late["attack"]["flagged"] == 1 and late["ordinary"]["flagged"] == 0


def test_a_policy_changes_which_window_alerts():
    from pipeline.bench.alert_age import compare, parse_policy
    seq = [w(1, 50, 0.0, 1.1), w(2, 100, 0.0, 0.7), w(3, 150, 0.0, 1.0)]
    benign = {"is_attack": False, "hard_negative": False, "family": "chat_product"}
    assert first_alert(seq, benign) == (1, 1)
    assert first_alert(seq, benign, policy=parse_policy("first:1.2,1")) == (3, 1)
    assert first_alert(seq, benign, policy=parse_policy("mean:2,0.9,1.2")) is None
    out = compare({"a": seq, "b": [w(1, 50, 1.3)]},
                  {"a": benign, "b": {"is_attack": True, "family": "broad_sweep"}},
                  parse_policy("mean:2,0.9,1.2"))
    assert out["ordinary_fpr"] == 0 and out["family_mean"] == 1 and out["hydra"] == 0
