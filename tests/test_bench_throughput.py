"""``bench throughput``'s report writers agree with its JSON (no broker: the committed results)."""
from pathlib import Path

import orjson
import pytest

from pipeline.bench import throughput

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


@pytest.mark.parametrize("name", ["throughput.json", "throughput-quick.json",
                                  "throughput-b64.json"])
def test_results_carry_e2e_vs_replay_and_keyed_rows(name):
    r = orjson.loads((RESULTS / name).read_bytes())
    for mode in throughput.MODES:
        d = r[mode]
        assert d["e2e_vs_replay"] == pytest.approx(
            d["e2e_events_per_s"] / d["replay_events_per_s"], abs=1e-3)
        assert d["e2e_keyed"]["input_keyed"] is True and d["e2e"]["input_keyed"] is False
        assert d["e2e_keyed_vs_replay"] == pytest.approx(
            d["e2e_keyed_events_per_s"] / d["replay_events_per_s"], abs=1e-3)
    assert len(r["machine"]["loadavg_start"]) == 3 and len(r["machine"]["loadavg_end"]) == 3


def test_markdown_shows_the_new_rows_and_survives_skipped_parts():
    r = orjson.loads((RESULTS / "throughput.json").read_bytes())
    md = throughput.markdown(r)
    for label in ("keyed input (no repartition hop)", "`replay --no-clickhouse` events/s",
                  "| e2e / replay |", "| e2e keyed / replay |", "Load average"):
        assert label in md
    p, t = r["provided"], r["text"]
    assert f"| {t['e2e_keyed_events_per_s']:,} |" in md
    assert f"{p['e2e_vs_replay']:.2f}" in md and f"{t['e2e_vs_replay']:.2f}" in md
    # a --skip e2e,replay run has none of these keys: the rows say n/a, nothing raises
    bare = {**r, "provided": {}, "text": {}, "scale_out": {}}
    assert "n/a" in throughput.markdown(bare)
