"""scratchlm.gradcheck and the ``scratchlm gradcheck`` command.

A gradient checker is only worth something if it fails: the tests below
break backward passes on purpose and require the report to say so.
"""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given

from scratchlm import cli
from scratchlm import functional as F
from scratchlm import gradcheck as gc
from strategies import arrays, seeds, shapes

CATALOGUE = list(gc.functional_cases())
CATALOGUE_NAMES = [case[0] for case in CATALOGUE]


# --- numerical_grad and directional_derivative ---------------------------------

@given(shapes(0, 3, budget=48).flatmap(lambda s: arrays(s)), seeds)
def test_numerical_grad_of_a_cubic(x, seed):
    c = np.random.default_rng(seed).standard_normal(x.shape)
    x_before = x.copy()
    numeric = gc.numerical_grad(lambda: (c * x**3).sum(), x)
    assert numeric.shape == x.shape and numeric.dtype == np.float64
    # A central difference of f = sum(c x^3) with step h = 1e-6 is exact up to c h^2
    # (1e-12) and the rounding of the two sums, a few ulps of sum|c x^3| over 2h each.
    h, eps = 1e-6, np.finfo(np.float64).eps
    rounding = 8 * eps * float(np.abs(c * x**3).sum()) / (2 * h)
    np.testing.assert_allclose(numeric, 3 * c * x**2, rtol=1e-7, atol=1e-8 + rounding)
    np.testing.assert_array_equal(x, x_before)          # restored, bit for bit


@given(shapes(1, 3, budget=48).flatmap(lambda s: arrays(s)), seeds)
def test_directional_derivative_is_the_gradient_along_u(x, seed):
    rng = np.random.default_rng(seed)
    c, u = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    x_before = x.copy()
    d = gc.directional_derivative(lambda: (c * np.sin(x)).sum(), x, u)
    np.testing.assert_allclose(d, (c * np.cos(x) * u).sum(), rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(x, x_before)


# --- gradcheck passes on every op of the catalogue -----------------------------

@pytest.mark.parametrize("op, shapes_text, forward, backward, inputs, wrt", CATALOGUE,
                         ids=CATALOGUE_NAMES)
def test_gradcheck_passes_on_every_functional_op(op, shapes_text, forward, backward, inputs,
                                                 wrt):
    report = gc.gradcheck(forward, backward, inputs, wrt)
    assert report.passed, f"{op}\n{report}"
    assert [r.name for r in report.inputs] == list(wrt)
    assert report.max_rel_err < 1e-6
    for r in report.inputs:
        expected_mode = "elementwise" if np.size(inputs[r.name]) <= 256 else "directional"
        assert r.mode == expected_mode


def test_check_functional_covers_every_op_family():
    names = " ".join(op for op, _, _ in gc.check_functional())
    for family in ("linear", "embedding", "layernorm", "gelu (none)", "gelu (tanh)", "relu",
                   "tanh", "softmax", "log_softmax", "dropout", "attention", "cross_entropy"):
        assert family in names


# --- gradcheck fails on wrong backwards ----------------------------------------

def linear_inputs(rng, n=3):
    return dict(x=rng.standard_normal((2, n, 4)), W=rng.standard_normal((4, 5)),
                b=rng.standard_normal(5))


def broken(backward, fix):
    """A backward whose gradients are passed through ``fix(grads) -> grads``."""
    return lambda dout, cache: fix(backward(dout, cache))


LINEAR_BUGS = {
    "dW off by 0.1%": (lambda g: (g[0], 1.001 * g[1], g[2]), {"W"}),
    "dx with the wrong sign": (lambda g: (-g[0], g[1], g[2]), {"x"}),
    "db from the first row only": (lambda g: (g[0], g[1], g[2] * 0.5), {"b"}),
    "dW transposed back and forth wrong": (
        lambda g: (g[0], g[1][::-1], g[2]), {"W"}),
}


@pytest.mark.parametrize("mode, max_elements", [("elementwise", 256), ("directional", 0)])
@pytest.mark.parametrize("bug", LINEAR_BUGS)
def test_gradcheck_reports_a_wrong_linear_backward(bug, mode, max_elements):
    fix, wrong = LINEAR_BUGS[bug]
    inputs = linear_inputs(np.random.default_rng(0))
    report = gc.gradcheck(F.linear_forward, broken(F.linear_backward, fix), inputs,
                          ["x", "W", "b"], max_elements=max_elements)
    assert not report.passed
    assert {r.name for r in report.inputs if not r.passed} == wrong
    assert all(r.mode == mode for r in report.inputs)
    assert "FAIL" in str(report)
    assert report.max_rel_err > 1e-4


def embedding_backward_assigning(dout, cache):
    """The classic bug: dW[ids] = dout keeps one row per repeated id instead of adding."""
    ids, W_shape, dtype = cache
    dW = np.zeros(W_shape, dtype=dtype)
    dW[ids.reshape(-1)] = dout.reshape(-1, W_shape[1])
    return dW


@pytest.mark.parametrize("max_elements", [256, 0])
def test_gradcheck_catches_assigned_instead_of_added_gradients(max_elements):
    rng = np.random.default_rng(0)
    ids = np.array([[1, 3, 1], [0, 1, 2]])             # id 1 appears three times
    inputs = dict(ids=ids, W=rng.standard_normal((5, 4)))
    good = gc.gradcheck(F.embedding_forward, F.embedding_backward, inputs, ["W"],
                        max_elements=max_elements)
    bad = gc.gradcheck(F.embedding_forward, embedding_backward_assigning, inputs, ["W"],
                       max_elements=max_elements)
    assert good.passed and not bad.passed
    # without repeated ids the two backwards agree, and both pass
    unique = dict(ids=np.array([[1, 3], [0, 2]]), W=inputs["W"])
    assert gc.gradcheck(F.embedding_forward, embedding_backward_assigning, unique, ["W"]).passed


def test_gradcheck_uses_a_random_upstream_gradient_not_a_bare_sum():
    # softmax rows sum to 1, so the gradient of sum(softmax(x)) is exactly 0: a
    # backward returning zeros would pass a bare-sum check. gradcheck must not.
    x = np.random.default_rng(0).standard_normal((3, 6))
    report = gc.gradcheck(F.softmax_forward, lambda dout, cache: np.zeros_like(dout),
                          dict(x=x), ["x"])
    assert not report.passed
    bare_sum = gc.numerical_grad(lambda: F.softmax_forward(x)[0].sum(), x)
    np.testing.assert_allclose(bare_sum, 0.0, atol=1e-9)


@pytest.mark.parametrize("name, forward, backward, inputs", [
    ("softmax without its Jacobian's second term", F.softmax_forward,
     lambda dout, cache: dout * cache.probs, "x"),
    ("layernorm without the mean terms", F.layernorm_forward,
     lambda dout, cache: (dout * cache.gamma * cache.rstd,) + F.layernorm_backward(dout, cache)[1:],
     "ln"),
    ("gelu exact with the tanh form's derivative", lambda x: F.gelu_forward(x, "none"),
     lambda dout, cache: F.gelu_backward(dout, cache._replace(approximate="tanh")),
     "x"),
    ("attention missing the scale", lambda q, k, v: F.attention_forward(q, k, v, causal=True),
     lambda dout, cache: F.attention_backward(dout, cache._replace(scale=1.0)), "qkv"),
    ("cross-entropy ignoring the ignored mask", lambda logits: F.cross_entropy_forward(
        logits, np.array([[1, -100, 2]])),
     lambda dloss, cache: F.cross_entropy_backward(dloss, cache._replace(
         weight=np.full_like(cache.weight, 1 / 3))), "logits"),
])
@pytest.mark.parametrize("max_elements", [256, 0])
def test_gradcheck_reports_other_wrong_backwards(name, forward, backward, inputs, max_elements):
    rng = np.random.default_rng(1)
    inputs = {"x": dict(x=rng.standard_normal((2, 3, 5))),
              "ln": dict(x=rng.standard_normal((2, 3, 5)), gamma=rng.standard_normal(5),
                         beta=rng.standard_normal(5)),
              "qkv": {n: rng.standard_normal((1, 2, 4, 3)) for n in "qkv"},
              "logits": dict(logits=rng.standard_normal((1, 3, 4)))}[inputs]
    assert gc.gradcheck(forward, backward, inputs, max_elements=max_elements).passed is False


# --- gradcheck's contract ------------------------------------------------------

def test_gradcheck_runs_in_float64_and_leaves_inputs_alone():
    seen = []

    def forward(x, W, b):
        seen.append((x.dtype, W.dtype, b.dtype))
        return F.linear_forward(x, W, b)

    rng = np.random.default_rng(0)
    inputs = {k: v.astype(np.float32) for k, v in linear_inputs(rng).items()}
    copies = {k: v.copy() for k, v in inputs.items()}
    report = gc.gradcheck(forward, F.linear_backward, inputs)
    assert report.passed
    assert seen and all(dtype == np.float64 for dtypes in seen for dtype in dtypes)
    for k in inputs:
        assert inputs[k].dtype == np.float32
        np.testing.assert_array_equal(inputs[k], copies[k])


def test_gradcheck_accepts_a_dict_of_gradients_and_a_zero_d_output():
    targets = np.array([0, 2, -100])

    def forward(logits):
        return F.cross_entropy_forward(logits, targets)

    report = gc.gradcheck(forward, lambda d, c: {"logits": F.cross_entropy_backward(d, c)},
                          dict(logits=np.random.default_rng(0).standard_normal((3, 4))))
    assert report.passed and [r.name for r in report.inputs] == ["logits"]


def test_gradcheck_default_wrt_is_every_floating_input():
    rng = np.random.default_rng(0)
    inputs = dict(ids=np.array([0, 2, 2]), W=rng.standard_normal((3, 2)))
    report = gc.gradcheck(F.embedding_forward, F.embedding_backward, inputs)
    assert [r.name for r in report.inputs] == ["W"] and report.passed


def test_gradcheck_zero_gradient_passes_by_atol():
    x = np.random.default_rng(0).standard_normal((2, 3))
    mask = np.zeros((1, 1, 2, 2), dtype=bool)             # every key masked: out and grads are 0
    q = np.random.default_rng(1).standard_normal((1, 1, 2, 2))
    report = gc.gradcheck(lambda q: F.attention_forward(q, x[:, None, None, :2].reshape(
        1, 1, 2, 2), q, mask=mask), lambda d, c: F.attention_backward(d, c)[0], dict(q=q))
    assert report.passed and report.max_abs_err == 0.0


@pytest.mark.parametrize("backward, wrt, message", [
    (F.embedding_backward, ["ids"], r"gradcheck: wrt name 'ids' is not a floating input; "
                                    r"inputs are \['W', 'ids'\]"),
    (F.embedding_backward, ["V"], r"gradcheck: wrt name 'V' is not a floating input"),
    (lambda d, c: F.embedding_backward(d, c)[:2], ["W"],
     r"gradcheck: gradient of 'W' has shape \(2, 3\), expected \(4, 3\)"),
    (lambda d, c: {"X": F.embedding_backward(d, c)}, ["W"],
     r"gradcheck: backward returned no gradient for 'W'"),
])
def test_gradcheck_rejects_misuse(backward, wrt, message):
    inputs = dict(ids=np.array([0, 3]), W=np.ones((4, 3)))
    with pytest.raises(ValueError, match=message):
        gc.gradcheck(F.embedding_forward, backward, inputs, wrt)


def test_report_text_lists_every_input():
    report = gc.gradcheck(F.linear_forward, F.linear_backward,
                          linear_inputs(np.random.default_rng(0)))
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["input", "shape"]
    assert [line.split()[0] for line in lines[1:]] == ["x", "W", "b"]
    assert all(line.endswith("pass") for line in lines[1:])
    assert report.max_abs_err == max(r.max_abs_err for r in report.inputs)


# --- the command (its op part: models have their own tests) -------------------

OPS = ["gradcheck", "--only", "ops"]


def test_command_passes_and_prints_a_row_per_op(capsys):
    assert cli.main(OPS) == 0
    out = capsys.readouterr().out
    for op in CATALOGUE_NAMES:
        row = next(line for line in out.splitlines() if line.startswith(op + " "))
        assert row.endswith("pass")
        rel = float(row.split()[-3])
        assert rel < 1e-6
    assert f"{len(CATALOGUE_NAMES)} passed, 0 failed" in out


def test_command_verbose_and_seed(capsys):
    assert cli.main(OPS + ["--seed", "3", "-v"]) == 0
    out = capsys.readouterr().out
    assert "max abs err" in out and "elementwise" in out and "directional" in out


def with_a_broken_op(seed=0):
    yield from CATALOGUE
    rng = np.random.default_rng(seed)
    yield ("linear (broken dW)", "x (2, 3, 4) W (4, 5)", F.linear_forward,
           broken(F.linear_backward, lambda g: (g[0], 1.01 * g[1], g[2])),
           linear_inputs(rng), ["x", "W", "b"])


def test_command_fails_with_exit_code_1_when_a_backward_is_wrong(monkeypatch, capsys):
    monkeypatch.setattr(gc, "functional_cases", with_a_broken_op)
    assert cli.main(OPS) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("linear (broken dW)"))
    assert row.endswith("FAIL")
    assert "W " in out and "FAIL" in out.split(row, 1)[1]   # the per-input detail follows
    assert f"{len(CATALOGUE_NAMES)} passed, 1 failed" in out


def test_command_reports_errors_on_stderr(monkeypatch, capsys):
    def failing(**kwargs):
        raise ValueError("something is off")
    monkeypatch.setattr(gc, "check_functional", failing)
    assert cli.main(OPS) == 1
    assert "scratchlm gradcheck: error: something is off" in capsys.readouterr().err


def test_command_without_a_subcommand_prints_help(capsys):
    assert cli.main([]) == 2
    assert "gradcheck" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["gradcheck", "--rtol", "tight"], ["nonsense"]])
def test_command_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_python_dash_m_scratchlm_gradcheck_exit_code():
    result = subprocess.run([sys.executable, "-m", "scratchlm"] + OPS,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
