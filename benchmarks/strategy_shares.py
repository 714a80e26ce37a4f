"""How often do the test strategies draw a trivial case?

    python benchmarks/strategy_shares.py                 # tests/strategies.py, both profiles
    python benchmarks/strategy_shares.py --draws 2000 --profile ci
    python benchmarks/strategy_shares.py --strategies /path/to/strategies.py

A gradient test learns little from a case where the math has nothing to do:
a softmax over one entry is 1 and its gradient 0, an attention row that sees
one key has dq = dk = 0, a LayerNorm over one feature is beta, an embedding
lookup of a single id never meets the scatter-add of a repeated id, and a
constant array hides every error that is the same on each element. For each
strategy of a strategies module, this script draws ``--draws`` cases the way
the tests do (through ``@given``, under the hypothesis profiles of
tests/conftest.py) and prints the share of cases that are trivial in each of
those ways. ``--strategies`` loads the module from any file, so that two
versions can be compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
MASK_KINDS = ("none", "bool_2d", "bool_4d", "int01_2d", "int01_4d", "additive")


def load_module(name: str, path: Path):
    """Import the Python file at ``path`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_profiles():
    """Register the hypothesis profiles ``dev`` and ``ci`` as tests/conftest.py does."""
    load_module("_scratchlm_test_conftest", ROOT / "tests" / "conftest.py")


# --- what "trivial" means, per strategy -----------------------------------------

def constant(*arrays) -> bool:
    """Some array of two or more elements has a single value."""
    return any(a.size >= 2 and np.all(a == a.reshape(-1)[0]) for a in arrays)


def constant_slice(x, axis) -> bool:
    """Some slice of ``x`` along ``axis`` has a single value (one entry counts as constant)."""
    return x.size > 0 and bool(np.any(np.ptp(x, axis=axis) == 0))


def keys_seen(q, k, mask, causal):
    """(B, H, Tq, Tk) bool: which keys each query row sees, after the mask and the causal rule."""
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    keep = np.ones((B, H, Tq, Tk), dtype=bool)
    if mask is not None:
        m = mask[:, None, None, :] if mask.ndim == 2 else mask
        keep &= np.isfinite(m) if m.dtype.kind == "f" else (m != 0)
    if causal:
        keep &= np.tri(Tq, Tk, Tk - Tq, dtype=bool)
    return keep


def no_row_sees_two_keys(case) -> bool:
    """Every query row sees at most one key: softmax is 1 or 0 everywhere, dq = dk = 0."""
    q, k, _, mask, causal = case[:5]
    return not (keys_seen(q, k, mask, causal).sum(-1) >= 2).any()


def fully_masked_row(case) -> bool:
    """Some query row sees no key at all (drawn on purpose by the attention strategy)."""
    q, k, _, mask, causal = case[:5]
    return bool((~keys_seen(q, k, mask, causal).any(-1)).any())


def measures(module):
    """(strategy label, strategy, {case: predicate}, trivial?) for every strategy of ``module``.

    Trivial cases are the ones to keep rare; the others are edge cases a
    strategy draws on purpose, shown for information.
    """
    m = module
    out = [
        ("linear_case()", m.linear_case(), {
            "C_in or C_out is 1": lambda c: min(c[1].shape) < 2,
            "x or W constant": lambda c: constant(c[0], c[1]),
        }, {}),
        ("embedding_case()", m.embedding_case(), {
            "fewer than 2 ids": lambda c: c[0].size < 2,
            "no repeated id": lambda c: len(np.unique(c[0])) == c[0].size,
            "W constant": lambda c: constant(c[1]),
        }, {}),
        ("layernorm_case()", m.layernorm_case(), {
            "one feature (C = 1)": lambda c: c[0].shape[-1] < 2,
            "C <= 2 (x_hat is 0 or +-1)": lambda c: c[0].shape[-1] < 3,
            "x constant": lambda c: constant(c[0]),
            "a constant row": lambda c: constant_slice(c[0], -1),
        }, {}),
        ("elementwise_case()", m.elementwise_case(), {
            "fewer than 2 elements": lambda c: c[0].size < 2,
            "x constant": lambda c: constant(c[0]),
        }, {}),
        ("softmax_case()", m.softmax_case(), {
            "axis of length 1": lambda c: c[0].shape[c[1]] < 2,
            "x constant": lambda c: constant(c[0]),
            "a constant slice on axis": lambda c: constant_slice(c[0], c[1]),
        }, {}),
        ("cross_entropy_case()", m.cross_entropy_case(), {
            "one class (V = 1)": lambda c: c[0].shape[-1] < 2,
            "every target ignored": lambda c: bool(np.all(c[1] == -100)),
            "logits constant": lambda c: constant(c[0]),
        }, {
            "some target ignored": lambda c: bool(np.any(c[1] == -100)),
        }),
        ("arrays(shapes(1, 3))", m.shapes(1, 3).flatmap(m.arrays), {
            "fewer than 2 elements": lambda a: a.size < 2,
            "constant (2+ elements)": lambda a: constant(a),
        }, {}),
    ]
    for kind in MASK_KINDS:
        out.append((f"attention_case({kind!r})", m.attention_case(kind), {
            "single key (Tk = 1)": lambda c: c[1].shape[2] < 2,
            "no row sees 2 keys": no_row_sees_two_keys,
            "q, k or v constant": lambda c: constant(c[0], c[1], c[2]),
        }, {} if kind == "none" else {
            "a fully masked row": fully_masked_row,
        }))
    return out


# --- sampling ---------------------------------------------------------------------

def sample(strategy, draws: int, profile: str | None = None):
    """``draws`` cases of ``strategy``, drawn as a ``@given`` test under ``profile`` draws them.

    ``profile=None``: the profile in force. Hypothesis does not repeat a case,
    so a strategy with fewer distinct cases than ``draws`` gives them all.
    """
    cases = []
    parent = settings.default if profile is None else settings.get_profile(profile)

    @settings(parent, max_examples=draws, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(case):
        cases.append(case)

    collect()
    return cases


def shares(module, draws: int, profile: str | None = None):
    """Rows (strategy, case, trivial?, share of the drawn cases, number drawn)."""
    rows = []
    for label, strategy, trivial, on_purpose in measures(module):
        cases = sample(strategy, draws, profile)
        for tests, is_trivial in ((trivial, True), (on_purpose, False)):
            for what, test in tests.items():
                hits = sum(bool(test(c)) for c in cases)
                rows.append((label, what, is_trivial, hits / max(1, len(cases)), len(cases)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", type=Path, default=ROOT / "tests" / "strategies.py",
                   help="the strategies module to sample (default: tests/strategies.py)")
    p.add_argument("--draws", type=int, default=2000, help="cases per strategy and profile")
    p.add_argument("--profile", nargs="+", default=["dev", "ci"], choices=["dev", "ci"])
    args = p.parse_args(argv)

    load_profiles()
    module = load_module("_sampled_strategies", args.strategies.resolve())
    table = {profile: shares(module, args.draws, profile) for profile in args.profile}
    print(f"strategies: {args.strategies}; draws per strategy: {args.draws}")
    print("trivial cases, then (marked *) edge cases drawn on purpose")
    head = f"{'strategy':<30} {'case':<26}" + "".join(
        f" {profile + ' share':>10}" for profile in args.profile)
    print(head)
    print("-" * len(head))
    first = table[args.profile[0]]
    for i, (label, what, is_trivial, _, _) in enumerate(first):
        cells = "".join(f" {table[profile][i][3]:>10.1%}" for profile in args.profile)
        print(f"{label:<30} {what if is_trivial else '* ' + what:<26}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
