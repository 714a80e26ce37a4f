"""Module.astype: a floating dtype casts every parameter; any other dtype is refused."""

import numpy as np
import pytest

from scratchlm.models import GPT, GPTConfig


def tiny_gpt():
    return GPT(GPTConfig(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2), seed=0)


@pytest.mark.parametrize("dtype", ["float64", np.float32, "float16"])
def test_astype_casts_data_and_grad_to_a_floating_dtype(dtype):
    model = tiny_gpt()
    assert model.astype(dtype) is model
    for _, p in model.named_parameters():
        assert p.data.dtype == np.dtype(dtype) and p.grad.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["int32", np.int64, "bool", "complex128", "uint8"])
def test_astype_refuses_a_non_floating_dtype_and_leaves_the_weights(dtype):
    model = tiny_gpt()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    with pytest.raises(TypeError, match=r"GPT\.astype: dtype must be a floating dtype .*; "
                                        rf"got {np.dtype(dtype)}"):
        model.astype(dtype)
    for n, p in model.named_parameters():
        assert p.data.dtype == np.float32
        np.testing.assert_array_equal(p.data, before[n])


def test_astype_names_a_dtype_numpy_does_not_know():
    with pytest.raises(TypeError, match=r"GPT\.astype: dtype must be a floating dtype such as "
                                        r"'float32'; got 'floaty'"):
        tiny_gpt().astype("floaty")
