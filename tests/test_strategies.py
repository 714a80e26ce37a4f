"""The test strategies draw cases that exercise the math, not its degenerate corners.

benchmarks/strategy_shares.py defines the trivial cases of each strategy (one
key, one feature, an axis of length 1, a single id, a constant array, ...);
here each strategy is sampled as its tests sample it, under the profile in
force, and every trivial share must stay under MAX_SHARE.
"""

import importlib.util
from pathlib import Path

import pytest

import strategies

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "strategy_shares.py"
spec = importlib.util.spec_from_file_location("strategy_shares", SCRIPT)
shares = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shares)

DRAWS = 60
MAX_SHARE = 0.2
MEASURES = shares.measures(strategies)


@pytest.mark.parametrize("label, strategy, trivial, on_purpose", MEASURES,
                         ids=[m[0] for m in MEASURES])
def test_trivial_cases_are_rare(label, strategy, trivial, on_purpose):
    cases = shares.sample(strategy, DRAWS)
    assert len(cases) >= DRAWS // 2, f"{label}: only {len(cases)} distinct cases"
    too_often = {what: f"{sum(bool(test(c)) for c in cases) / len(cases):.0%}"
                 for what, test in trivial.items()
                 if sum(bool(test(c)) for c in cases) > MAX_SHARE * len(cases)}
    assert not too_often, f"{label} draws trivial cases too often: {too_often}"


def test_attention_still_draws_fully_masked_rows():
    """The edge case drawn on purpose is still there (not lost to the fix-ups)."""
    for kind in ("bool_2d", "bool_4d", "additive"):
        cases = shares.sample(strategies.attention_case(kind), DRAWS)
        hits = sum(shares.fully_masked_row(c) for c in cases)
        assert hits >= 0.05 * len(cases), (kind, hits, len(cases))
