"""Write a forward/backward pair for a new op and prove its gradient numerically.

The op: a "swish" activation, y = x * sigmoid(beta * x), with a learned beta.

    python examples/gradcheck_your_own_op.py
"""

from typing import NamedTuple

import numpy as np

from scratchlm.gradcheck import gradcheck


class SwishCache(NamedTuple):
    x: np.ndarray       # the input
    s: np.ndarray       # sigmoid(beta * x)
    beta: float


def swish_forward(x, beta):
    """y = x * s,  s = sigmoid(beta * x).  Shapes: x (...), beta () -> y (...)"""
    s = 1.0 / (1.0 + np.exp(-beta * x))                 # (1)
    return x * s, SwishCache(x, s, beta)                # (2)


def swish_backward(dout, cache):
    """dy/dx = s + x * beta * s (1 - s);   dy/dbeta = x^2 * s (1 - s)."""
    x, s, beta = cache
    ds = dout * x                                       # back through (2): the s operand
    dz = ds * s * (1.0 - s)                             # back through (1): sigmoid'
    dx = dout * s + dz * beta                           # (2)'s x operand + (1)'s
    dbeta = (dz * x).sum()
    return dx, np.asarray(dbeta)


rng = np.random.default_rng(0)
x = rng.standard_normal((4, 5))
report = gradcheck(lambda x, beta: swish_forward(x, beta), swish_backward,
                   {"x": x, "beta": np.asarray(1.3)})
print(report)
print("passed" if report.passed else "FAILED")
