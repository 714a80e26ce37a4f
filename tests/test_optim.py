"""SGD and AdamW: PyTorch parity, hand-computed steps, state dicts, dtypes, errors."""

import copy

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from scratchlm.nn.parameter import Parameter
from scratchlm.optim import SGD, AdamW

SHAPES = [(), (3,), (4, 5), (2, 3, 4)]
N_STEPS = 7

SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "dampening": dict(lr=0.1, momentum=0.9, dampening=0.3),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "all": dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.02),
    "nesterov_decay": dict(lr=0.05, momentum=0.8, weight_decay=0.02, nesterov=True),
}
ADAMW_CASES = {
    "no_decay": dict(lr=1e-2, weight_decay=0.0),
    "decay": dict(lr=1e-2, weight_decay=0.1),
    "default": dict(),
    "amsgrad": dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
    "small_beta1": dict(lr=3e-2, betas=(0.3, 0.9), eps=1e-6, weight_decay=0.05),
}


def make_params(seed=0, dtype=np.float64, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def gradient_sequence(seed=1, n_steps=N_STEPS, dtype=np.float64, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(n_steps)]


def run(opt, params, grads_seq, lrs=None):
    """Step ``opt`` through the gradient sequence, setting ``opt.lr`` first when given."""
    for t, grads in enumerate(grads_seq):
        if lrs is not None:
            opt.lr = lrs[t]
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad += g
        opt.step()


# --- PyTorch parity -------------------------------------------------------------

def torch_run(torch_cls, groups, grads_seq, lrs=None, **kwargs):
    """The same run in torch: groups is a list of (list of arrays, overrides)."""
    torch = pytest.importorskip("torch")
    tensors = [[torch.tensor(a.copy(), requires_grad=True) for a in arrays]
               for arrays, _ in groups]
    opt = torch_cls([{"params": ts, **over} for ts, (_, over) in zip(tensors, groups)],
                    foreach=False, **kwargs)
    flat = [t for ts in tensors for t in ts]
    for step, grads in enumerate(grads_seq):
        if lrs is not None:
            for g in opt.param_groups:
                g["lr"] = lrs[step]
        for t, g in zip(flat, grads):
            t.grad = torch.tensor(g.copy())
        opt.step()
    return [t.detach().numpy() for t in flat], opt


def assert_close_to_torch(params, torch_arrays):
    for p, ref in zip(params, torch_arrays):
        assert_allclose(p.data, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.reference
@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_matches_torch(case):
    torch = pytest.importorskip("torch")
    kwargs = SGD_CASES[case]
    params, grads = make_params(), gradient_sequence()
    ref, _ = torch_run(torch.optim.SGD, [([p.data for p in params], {})], grads, **kwargs)
    run(SGD(params, **kwargs), params, grads)
    assert_close_to_torch(params, ref)


@pytest.mark.reference
@pytest.mark.parametrize("case", list(ADAMW_CASES))
def test_adamw_matches_torch(case):
    torch = pytest.importorskip("torch")
    kwargs = ADAMW_CASES[case]
    params, grads = make_params(), gradient_sequence()
    ref, topt = torch_run(torch.optim.AdamW, [([p.data for p in params], {})], grads, **kwargs)
    opt = AdamW(params, **kwargs)
    run(opt, params, grads)
    assert_close_to_torch(params, ref)
    for p, t in zip(params, [t for g in topt.param_groups for t in g["params"]]):
        ts, ours = topt.state[t], opt.state[p]
        assert ours["step"] == int(ts["step"]) == N_STEPS
        assert_allclose(ours["exp_avg"], ts["exp_avg"].numpy(), rtol=1e-12, atol=1e-15)
        assert_allclose(ours["exp_avg_sq"], ts["exp_avg_sq"].numpy(), rtol=1e-12, atol=1e-15)
        if kwargs.get("amsgrad"):
            assert_allclose(ours["max_exp_avg_sq"], ts["max_exp_avg_sq"].numpy(),
                            rtol=1e-12, atol=1e-15)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_param_groups_and_changing_lr_match_torch(name):
    torch = pytest.importorskip("torch")
    ours_cls, torch_cls = {"SGD": (SGD, torch.optim.SGD),
                           "AdamW": (AdamW, torch.optim.AdamW)}[name]
    base = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=1e-2, amsgrad=True)
    over = [{"weight_decay": 0.1}, {"weight_decay": 0.0, "lr": 0.03}]
    params, grads = make_params(), gradient_sequence()
    split = [params[:2], params[2:]]
    ref, _ = torch_run(torch_cls, [([p.data for p in ps], o) for ps, o in zip(split, over)],
                       grads, **base)
    run(ours_cls([{"params": ps, **o} for ps, o in zip(split, over)], **base), params, grads)
    assert_close_to_torch(params, ref)

    # lr changed between steps (every group), as a schedule does
    lrs = [0.1 * 0.7 ** t for t in range(N_STEPS)]
    params = make_params()
    ref, _ = torch_run(torch_cls, [([p.data for p in params], {})], grads, lrs=lrs,
                       **{**base, "weight_decay": 0.05})
    run(ours_cls(params, **{**base, "weight_decay": 0.05}), params, grads, lrs=lrs)
    assert_close_to_torch(params, ref)


@pytest.mark.reference
def test_named_parameters_match_torch():
    torch = pytest.importorskip("torch")
    params, grads = make_params(), gradient_sequence()
    ref, _ = torch_run(torch.optim.AdamW, [([p.data for p in params], {})], grads)
    opt = AdamW([(f"w{i}", p) for i, p in enumerate(params)])
    run(opt, params, grads)
    assert_close_to_torch(params, ref)
    assert opt.param_groups[0]["param_names"] == ["w0", "w1", "w2", "w3"]


# --- hand-computed steps ----------------------------------------------------------

def test_adamw_first_step_by_hand():
    p = Parameter(np.array(1.0))
    p.grad[...] = 0.5
    AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01).step()
    # decay: 1 * (1 - 0.1 * 0.01) = 0.999; m = 0.05, v = 0.00025;
    # m_hat = 0.05 / 0.1 = 0.5, v_hat = 0.00025 / 0.001 = 0.25, sqrt(v_hat) = 0.5
    assert_allclose(p.data, 0.999 - 0.1 * 0.5 / (0.5 + 1e-8), rtol=1e-15)


def test_adamw_second_step_by_hand():
    p = Parameter(np.array(2.0))
    opt = AdamW([p], lr=0.1, betas=(0.5, 0.75), eps=0.0, weight_decay=0.0)
    for g in (1.0, -3.0):
        p.grad[...] = g
        opt.step()
    # t=1: m = 0.5, v = 0.25, m_hat = 1, v_hat = 1 -> p = 2 - 0.1 = 1.9
    # t=2: m = 0.25 - 1.5 = -1.25, v = 0.1875 + 2.25 = 2.4375
    #      m_hat = -1.25 / 0.75, v_hat = 2.4375 / 0.4375
    expected = 1.9 - 0.1 * (-1.25 / 0.75) / np.sqrt(2.4375 / 0.4375)
    assert_allclose(p.data, expected, rtol=1e-14)
    assert opt.state[p]["step"] == 2


@pytest.mark.parametrize("dampening, nesterov, expected", [
    # b: 1, 0.9*1 + 2 = 2.9, 0.9*2.9 + 3 = 5.61 -> p = 1 - 0.1 (1 + 2.9 + 5.61)
    (0.0, False, 1 - 0.1 * (1 + 2.9 + 5.61)),
    # b: 1 (no dampening at the first step), 0.9 + 0.5*2 = 1.9, 1.71 + 1.5 = 3.21
    (0.5, False, 1 - 0.1 * (1 + 1.9 + 3.21)),
    # d = g + 0.9 b with b as in the first case: 1.9, 2 + 2.61, 3 + 5.049
    (0.0, True, 1 - 0.1 * (1.9 + 4.61 + 8.049)),
])
def test_sgd_momentum_by_hand(dampening, nesterov, expected):
    p = Parameter(np.array(1.0))
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=dampening, nesterov=nesterov)
    for g in (1.0, 2.0, 3.0):
        p.grad[...] = g
        opt.step()
    assert_allclose(p.data, expected, rtol=1e-14)


def test_sgd_weight_decay_by_hand():
    p = Parameter(np.array([2.0, -1.0]))
    p.grad[...] = [0.5, 0.5]
    SGD([p], lr=0.1, weight_decay=0.1).step()
    assert_allclose(p.data, [2.0 - 0.1 * (0.5 + 0.2), -1.0 - 0.1 * (0.5 - 0.1)], rtol=1e-15)


# --- behaviour --------------------------------------------------------------------

OPTIMIZERS = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (AdamW, dict(lr=1e-2)),
    (AdamW, dict(lr=1e-2, amsgrad=True, betas=(0.3, 0.9))),
]
IDS = ["sgd", "sgd_momentum", "sgd_nesterov", "adamw", "adamw_amsgrad"]


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_frozen_parameters_are_untouched(cls, kwargs):
    params = make_params()
    params[1].requires_grad = False
    frozen_before = params[1].data.copy()
    opt = cls(params, **kwargs)
    run(opt, params, gradient_sequence(n_steps=3))
    assert_array_equal(params[1].data, frozen_before)
    assert params[1] not in opt.state
    assert not np.array_equal(params[0].data, make_params()[0].data)
    assert 1 not in opt.state_dict()["state"]


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
@pytest.mark.parametrize("lr_type", [float, np.float64])
def test_float32_stays_float32_in_place(cls, kwargs, lr_type):
    params = make_params(dtype=np.float32)
    arrays = [p.data for p in params]
    opt = cls(params, **{**kwargs, "lr": lr_type(kwargs["lr"])})
    for grads in gradient_sequence(n_steps=3, dtype=np.float32):
        for p, g in zip(params, grads):
            p.grad[...] = g
        grads_before = [p.grad.copy() for p in params]
        opt.step()
        for p, before in zip(params, grads_before):
            assert_array_equal(p.grad, before)           # the gradient is only read
    for p, a in zip(params, arrays):
        assert p.data is a and p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state.get(p, {}).values()
                   if hasattr(v, "dtype"))
    assert all(w.dtype == np.float32 for w in opt._workspace.values())


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_float32_follows_float64(cls, kwargs):
    p64, p32 = make_params(), make_params(dtype=np.float32)
    grads = gradient_sequence()
    run(cls(p64, **kwargs), p64, grads)
    run(cls(p32, **kwargs), p32, [[g.astype(np.float32) for g in gs] for gs in grads])
    for a, b in zip(p32, p64):
        assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_state_dict_resume_equals_uninterrupted(cls, kwargs):
    grads = gradient_sequence(n_steps=6)
    straight = make_params()
    run(cls(straight, **kwargs), straight, grads)

    first = make_params()
    opt = cls([(f"p{i}", p) for i, p in enumerate(first)], **kwargs)
    run(opt, first, grads[:3])
    saved = copy.deepcopy(opt.state_dict())
    weights = [p.data.copy() for p in first]
    run(opt, first, grads[3:4])                      # later steps leave the snapshot alone
    for i, entry in saved["state"].items():
        for k, v in entry.items():
            if hasattr(v, "shape"):
                assert v is not opt.state[first[i]][k]

    resumed = [Parameter(w) for w in weights]        # the weights at step 3
    fresh = cls([(f"p{i}", p) for i, p in enumerate(resumed)],
                **{**kwargs, "lr": 0.5})             # hyper-parameters come from the save
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == kwargs["lr"]
    run(fresh, resumed, grads[3:])
    for a, b in zip(resumed, straight):
        assert_array_equal(a.data, b.data)


def test_state_dict_round_trips_exactly_and_survives_json_keys():
    params = make_params()
    opt = AdamW(params, amsgrad=True)
    run(opt, params, gradient_sequence(n_steps=2))
    saved = opt.state_dict()
    as_json = {"state": {str(k): v for k, v in saved["state"].items()},
               "param_groups": [{**g, "betas": list(g["betas"])} for g in saved["param_groups"]]}
    other = AdamW(make_params(), amsgrad=True)
    other.load_state_dict(as_json)
    again = other.state_dict()
    assert again["param_groups"] == saved["param_groups"]
    for i, entry in saved["state"].items():
        assert again["state"][i]["step"] == entry["step"] == 2
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert_array_equal(again["state"][i][k], entry[k])
            assert again["state"][i][k].dtype == entry[k].dtype


def test_load_state_dict_reports_every_problem():
    params = make_params()
    opt = AdamW([("a", params[0]), ("b", params[1])])
    run(opt, params[:2], gradient_sequence(n_steps=1, shapes=SHAPES[:2]))
    saved = opt.state_dict()
    saved["state"][1]["exp_avg"] = np.zeros((7,))
    del saved["state"][0]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"exp_avg has shape \(7,\), expected \(3,\)") as err:
        AdamW([("a", params[0]), ("b", params[1])]).load_state_dict(saved)
    assert "expected entries" in str(err.value)
    with pytest.raises(ValueError, match="expected 1 param groups; got 2"):
        AdamW(params[:2]).load_state_dict({**saved, "param_groups": saved["param_groups"] * 2})
    with pytest.raises(ValueError, match=r"parameter names differ: 'x' vs saved 'a'"):
        AdamW([("x", params[0]), ("b", params[1])]).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="group 0 has 3 parameters, the saved group 2"):
        AdamW(params[:3]).load_state_dict(opt.state_dict())
    target = AdamW(params[:2], lr=0.5)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        bad = opt.state_dict()
        bad["param_groups"][0]["lr"] = -1.0
        target.load_state_dict(bad)
    assert target.lr == 0.5 and not target.state       # nothing changed


def test_param_groups_lr_and_defaults():
    params = make_params()
    opt = AdamW([{"params": params[:2], "weight_decay": 0.0},
                 {"params": params[2:], "lr": 0.5}], lr=0.1, betas=[0.8, 0.9])
    g0, g1 = opt.param_groups
    assert (g0["lr"], g0["weight_decay"], g0["betas"]) == (0.1, 0.0, (0.8, 0.9))
    assert (g1["lr"], g1["weight_decay"]) == (0.5, 1e-2)
    with pytest.raises(ValueError, match=r"different learning rates \[0.1, 0.5\]"):
        opt.lr
    opt.lr = 0.2
    assert opt.lr == 0.2 and g1["lr"] == 0.2
    g0["lr"] = 0.0                                      # a group with lr 0 stays put
    before = params[0].data.copy()
    run(opt, params, gradient_sequence(n_steps=1))
    assert_array_equal(params[0].data, before)
    extra = Parameter(np.ones(2))
    opt.add_param_group({"params": [extra], "lr": 0.3})
    assert opt.param_groups[2]["lr"] == 0.3 and opt.param_groups[2]["weight_decay"] == 1e-2


def test_mapping_and_generator_params():
    params = make_params()
    opt = SGD({f"w{i}": p for i, p in enumerate(params)}, lr=0.1)
    assert opt.param_groups[0]["params"] == params
    assert opt.param_groups[0]["param_names"] == ["w0", "w1", "w2", "w3"]
    assert SGD((p for p in params), lr=0.1).param_groups[0]["params"] == params


def test_zero_grad_clears_gradients_in_place():
    params = make_params()
    grad_arrays = [p.grad for p in params]
    for p in params:
        p.grad += 1.0
    SGD(params, lr=0.1).zero_grad()
    for p, g in zip(params, grad_arrays):
        assert p.grad is g and not p.grad.any()


def test_workspace_is_reused_across_steps():
    params = make_params()
    opt = AdamW(params)
    run(opt, params, gradient_sequence(n_steps=1))
    buffers = {k: id(v) for k, v in opt._workspace.items()}
    run(opt, params, gradient_sequence(n_steps=2))
    assert {k: id(v) for k, v in opt._workspace.items()} == buffers


# --- bad arguments ------------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs, exc, message", [
    (SGD, dict(lr=-0.1), ValueError, "SGD: lr must be a finite number >= 0.0; got -0.1"),
    (SGD, dict(lr="fast"), TypeError, "SGD: lr must be a real number; got str 'fast'"),
    (SGD, dict(lr=float("nan")), ValueError, "SGD: lr must be a finite number >= 0.0; got nan"),
    (SGD, dict(lr=0.1, momentum=-0.5), ValueError, "SGD: momentum must be a finite number >= 0.0"),
    (SGD, dict(lr=0.1, weight_decay=-1), ValueError,
     "SGD: weight_decay must be a finite number >= 0.0; got -1"),
    (SGD, dict(lr=0.1, nesterov=True), ValueError,
     "SGD: nesterov=True requires momentum > 0 and dampening = 0; got momentum=0.0"),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening=0.1"),
    (SGD, dict(lr=0.1, nesterov=1), TypeError, "SGD: nesterov must be True or False; got int 1"),
    (AdamW, dict(lr=-1e-3), ValueError, "AdamW: lr must be a finite number >= 0.0; got -0.001"),
    (AdamW, dict(betas=(1.0, 0.999)), ValueError, "AdamW: betas[0] must be in [0.0, 1.0); got 1.0"),
    (AdamW, dict(betas=(0.9, -0.1)), ValueError, "AdamW: betas[1] must be in [0.0, 1.0); got -0.1"),
    (AdamW, dict(betas=0.9), TypeError, "AdamW: betas must be a pair (beta1, beta2); got 0.9"),
    (AdamW, dict(eps=-1e-8), ValueError, "AdamW: eps must be a finite number >= 0.0; got -1e-08"),
    (AdamW, dict(weight_decay=-0.01), ValueError,
     "AdamW: weight_decay must be a finite number >= 0.0"),
    (AdamW, dict(amsgrad="yes"), TypeError, "AdamW: amsgrad must be True or False; got str 'yes'"),
])
def test_bad_hyper_parameters(cls, kwargs, exc, message):
    with pytest.raises(exc) as err:
        cls(make_params(), **kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("params, exc, message", [
    ([], ValueError, "AdamW: params must hold at least one Parameter; got an empty list"),
    ([{"params": []}], ValueError,
     "AdamW: params must hold at least one Parameter; got none"),
    ([np.zeros(3)], TypeError,
     "AdamW: params[0] must be a Parameter or a (name, Parameter) pair; got ndarray"),
    (Parameter(np.zeros(3)), TypeError,
     "AdamW: params must be an iterable of Parameters; got a single Parameter"),
    (3, TypeError, "AdamW: params must be an iterable of Parameters"),
    ([{"params": [Parameter(np.zeros(3))], "weight_dacay": 0.0}], ValueError,
     "AdamW: unknown param-group keys ['weight_dacay']"),
    ([{"params": [Parameter(np.zeros(3))], "lr": -1.0}, {"params": [Parameter(np.zeros(2))]}],
     ValueError, "AdamW param group 0: lr must be a finite number >= 0.0; got -1.0"),
])
def test_bad_params(params, exc, message):
    with pytest.raises(exc) as err:
        AdamW(params)
    assert message in str(err.value)


def test_duplicate_parameters_and_bad_lr_assignment():
    p = Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="appears more than once"):
        SGD([p, p], lr=0.1)
    opt = SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        opt.add_param_group({"params": [p]})
    with pytest.raises(ValueError, match=r"SGD.lr: lr must be a finite number >= 0.0; got -2"):
        opt.lr = -2
    assert opt.lr == 0.1


# --- GPU --------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=IDS)
def test_cupy_matches_numpy(cls, kwargs):
    import cupy

    grads = gradient_sequence()
    on_cpu = make_params()
    run(cls(on_cpu, **kwargs), on_cpu, grads)
    on_gpu = [Parameter(cupy.asarray(p.data)) for p in make_params()]
    arrays = [p.data for p in on_gpu]
    run(cls(on_gpu, **kwargs), on_gpu, [[cupy.asarray(g) for g in gs] for gs in grads])
    for a, b, arr in zip(on_gpu, on_cpu, arrays):
        assert a.data is arr
        assert_allclose(cupy.asnumpy(a.data), b.data, rtol=1e-12, atol=1e-14)
