"""Optimizers: SGD and AdamW, with PyTorch's update rules, on any backend.

An optimizer owns a list of *param groups*: dicts holding a list of
``Parameter`` objects under ``"params"`` and that group's hyper-parameters
(``"lr"``, ``"weight_decay"``, ...). ``step()`` reads each trainable
parameter's ``.grad`` and updates its ``.data`` in place; ``zero_grad()``
clears the gradients for the next accumulation.

    opt = AdamW(model.named_parameters(), lr=3e-4, weight_decay=0.1)
    for batch in batches:
        opt.zero_grad()
        model(**batch); model.backward()      # fills every p.grad
        opt.step()                            # p.data updated in place
        opt.lr = schedule(step)               # every group's lr, at run time

``params`` may be a list of Parameters, a list of ``(name, Parameter)`` pairs
(``model.named_parameters()``; the names are kept in ``"param_names"`` and in
the state dict), a mapping name -> Parameter, or a list of dicts, one per group,
each overriding the constructor's hyper-parameters, as in PyTorch:

    opt = AdamW([{"params": decay, "weight_decay": 0.1},
                 {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)

Rules shared by both optimizers:

* A parameter with ``requires_grad=False`` is skipped: no update, no state.
* Arithmetic happens on the parameter's own backend (``get_array_module``)
  and dtype: hyper-parameters enter as Python floats, so a float32 model stays
  float32 with no float64 temporaries.
* ``p.data`` is updated in place and keeps its identity; ``p.grad`` is only
  read. Intermediate results go into scratch arrays that are views of one flat
  buffer per backend and dtype, reused for every parameter and every step.
* The operations follow PyTorch's single-tensor (``foreach=False``)
  implementations one for one, in the same order, so float64 results agree
  with ``torch.optim`` to rounding. (Bit-for-bit equality is out of reach:
  PyTorch's CPU kernels fuse some multiply-adds and its vectorised sqrt is
  not always correctly rounded.)
* ``state_dict()`` is a snapshot (arrays copied) laid out as PyTorch's:
  ``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``,
  parameters numbered in group order. ``load_state_dict`` checks everything
  first, reports every problem in one error, then copies the arrays onto each
  parameter's backend and dtype (as ``Module.load_state_dict`` does).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from scratchlm.backend import get_array_module, is_cupy_array, to_backend
from scratchlm.kernels.tables import table
from scratchlm.nn.parameter import Parameter


# --- hyper-parameter checks ---------------------------------------------------

def _check_real(where: str, name: str, value, low: float | None = None,
                high: float | None = None):
    """``value`` is a finite real number, >= low (when given) and < high (when given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number; "
                        f"got {type(value).__name__} {value!r}")
    if high is not None:
        if not (low <= value < high):
            raise ValueError(f"{where}: {name} must be in [{low}, {high}); got {value!r}")
    elif not (math.isfinite(value) and (low is None or value >= low)):
        bound = "" if low is None else f" >= {low}"
        raise ValueError(f"{where}: {name} must be a finite number{bound}; got {value!r}")


def _check_bool(where: str, name: str, value):
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False; "
                        f"got {type(value).__name__} {value!r}")


def _copy_like(a, p: Parameter):
    """A copy of array ``a`` on ``p``'s backend, in ``p``'s dtype."""
    return to_backend(a, "cupy" if is_cupy_array(p.data) else "numpy").astype(
        p.data.dtype, copy=True)


# --- the shared machinery -----------------------------------------------------

class Optimizer:
    """Param groups, per-parameter state, ``zero_grad`` and state dicts.

    A subclass sets ``defaults`` (its hyper-parameters, in constructor order),
    checks a group's values in ``_check_group``, names what it keeps per
    parameter in ``_state_keys``, and updates one group in ``_step_group``.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict[Parameter, dict] = {}     # Parameter -> its buffers
        self._workspace: dict = {}                 # (backend, dtype) -> flat scratch
        name = type(self).__name__
        self._check_group(self.defaults, name)     # the constructor's own arguments
        groups = self._split_groups(params)
        for i, group in enumerate(groups):
            self._add_group(group, f"{name} param group {i}" if len(groups) > 1 else name)
        if not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{name}: params must hold at least one Parameter; got none "
                             "(pass model.parameters() or model.named_parameters())")

    # --- building groups --------------------------------------------------
    def _split_groups(self, params) -> list[dict]:
        """Normalise ``params`` to a list of group dicts (``"params"`` still raw)."""
        name = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{name}: params must be an iterable of Parameters; "
                            "got a single Parameter (wrap it in a list)")
        if isinstance(params, Mapping):
            params = list(params.items())            # name -> Parameter
        try:
            items = list(params)
        except TypeError:
            raise TypeError(f"{name}: params must be an iterable of Parameters, "
                            f"(name, Parameter) pairs or param-group dicts; "
                            f"got {type(params).__name__}") from None
        if not items:
            raise ValueError(f"{name}: params must hold at least one Parameter; got an "
                             "empty list (pass model.parameters() or model.named_parameters())")
        if all(isinstance(item, Mapping) for item in items):
            return [dict(item) for item in items]
        if any(isinstance(item, Mapping) for item in items):
            raise TypeError(f"{name}: params mixes param-group dicts with other items; "
                            "give either a list of dicts or a list of Parameters")
        return [{"params": items}]

    def _unpack_params(self, raw, where: str):
        """``raw`` (Parameters or (name, Parameter) pairs) -> (params, names or None)."""
        if isinstance(raw, Parameter):
            raw = [raw]
        elif isinstance(raw, Mapping):
            raw = list(raw.items())
        try:
            raw = list(raw)
        except TypeError:
            raise TypeError(f"{where}: 'params' must be an iterable of Parameters; "
                            f"got {type(raw).__name__}") from None
        params, names = [], []
        for i, item in enumerate(raw):
            if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], Parameter)):
                names.append(item[0])
                params.append(item[1])
            elif isinstance(item, Parameter):
                params.append(item)
            else:
                raise TypeError(f"{where}: params[{i}] must be a Parameter or a "
                                f"(name, Parameter) pair; got {type(item).__name__} "
                                "(wrap arrays as Parameter(array))")
        if names and len(names) != len(params):
            raise TypeError(f"{where}: params mixes (name, Parameter) pairs with bare "
                            "Parameters; give all names or none")
        return params, (names or None)

    def _add_group(self, group: dict, where: str) -> None:
        if "params" not in group:
            raise ValueError(f"{where}: a param group needs a 'params' entry; "
                             f"got keys {sorted(group)}")
        unknown = sorted(set(group) - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(f"{where}: unknown param-group keys {unknown}; "
                             f"expected 'params' and any of {list(self.defaults)}")
        params, names = self._unpack_params(group["params"], where)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(f"{where}: params[{i}] {p} appears more than once "
                                 "(within or across param groups); list each Parameter once")
            seen.add(id(p))
        settings = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check_group(settings, where)
        new = {"params": params, **settings}
        if names is not None:
            new["param_names"] = names
        self.param_groups.append(new)

    def add_param_group(self, group: dict) -> None:
        """Append a group (``{"params": [...], hyper-parameter overrides...}``)."""
        if not isinstance(group, Mapping):
            raise TypeError(f"{type(self).__name__}.add_param_group: group must be a dict; "
                            f"got {type(group).__name__}")
        self._add_group(dict(group), f"{type(self).__name__}.add_param_group")

    # --- to be defined by each optimizer ----------------------------------
    def _check_group(self, group: dict, where: str) -> None:
        raise NotImplementedError

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        raise NotImplementedError

    def _step_group(self, group: dict) -> None:
        raise NotImplementedError

    # --- the public loop --------------------------------------------------
    def step(self) -> None:
        """Update every trainable parameter from its ``.grad``, group by group."""
        for group in self.param_groups:
            self._step_group(group)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zero (in place)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.zero_grad()

    @staticmethod
    def _trainable(group: dict):
        """The group's parameters that take an update: requires_grad, with a grad."""
        return [p for p in group["params"] if p.requires_grad and p.grad is not None]

    def _scratch(self, p: Parameter, n: int) -> list:
        """``n`` scratch arrays shaped like ``p.data``, views of one reused flat buffer.

        One buffer per backend and dtype, sized for ``n`` copies of the largest
        parameter, so a step allocates nothing after the first.
        """
        xp = get_array_module(p.data)
        key = (xp.__name__, p.data.dtype.str)
        size = p.data.size
        flat = self._workspace.get(key)
        if flat is None or flat.size < n * size:
            largest = max(q.data.size for g in self.param_groups for q in g["params"])
            flat = self._workspace[key] = xp.empty(n * max(largest, size), dtype=p.data.dtype)
        return [flat[i * size:(i + 1) * size].reshape(p.data.shape) for i in range(n)]

    # --- the learning rate ------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate, when every group shares one (else read ``param_groups``)."""
        lrs = [g["lr"] for g in self.param_groups]
        if any(lr != lrs[0] for lr in lrs):
            raise ValueError(f"{type(self).__name__}.lr: the param groups have different "
                             f"learning rates {lrs}; read param_groups[i]['lr'] instead")
        return lrs[0]

    @lr.setter
    def lr(self, value) -> None:
        """Set the learning rate of every group."""
        _check_real(f"{type(self).__name__}.lr", "lr", value, 0.0)
        for g in self.param_groups:
            g["lr"] = value

    # --- checkpoints ------------------------------------------------------
    def state_dict(self) -> dict:
        """A snapshot: hyper-parameters, step counts and copies of every buffer.

        Layout (as PyTorch's): ``{"state": {index: {"step": int, name: array}},
        "param_groups": [{hyper-parameters..., "params": [index, ...],
        "param_names": [...] (when named)}]}``; indices count parameters in
        group order; parameters without state (frozen, or not yet stepped) are
        absent from ``"state"``.
        """
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                if p in self.state:
                    state[index] = {k: (v.copy() if hasattr(v, "shape") else v)
                                    for k, v in self.state[p].items()}
                indices.append(index)
                index += 1
            saved = {k: (list(v) if isinstance(v, list) else v)
                     for k, v in group.items() if k != "params"}
            groups.append({**saved, "params": indices})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore a ``state_dict()``: hyper-parameters, step counts and buffers.

        The saved groups must match this optimizer's groups in number and size
        (and in parameter names, where both have them); every buffer must have
        its parameter's shape. All problems are reported in one error; nothing
        changes unless everything checks. Buffers are copied onto each
        parameter's backend and dtype; integer-like keys (``"3"`` from JSON)
        are accepted.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if (not isinstance(state_dict, Mapping)
                or set(state_dict) != {"state", "param_groups"}):
            got = (sorted(state_dict) if isinstance(state_dict, Mapping)
                   else type(state_dict).__name__)
            raise ValueError(f"{where}: expected a dict with keys 'state' and 'param_groups' "
                             f"(from state_dict()); got {got}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{where}: expected {len(self.param_groups)} param groups; "
                             f"got {len(saved_groups)}")
        problems, by_index, settings = [], {}, []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            saved_ids = list(saved.get("params", []))
            if len(saved_ids) != len(group["params"]):
                problems.append(f"group {i} has {len(group['params'])} parameters, "
                                f"the saved group {len(saved_ids)}")
                continue
            names, saved_names = group.get("param_names"), saved.get("param_names")
            if names is not None and saved_names is not None and list(saved_names) != names:
                bad = [f"{a!r} vs saved {b!r}" for a, b in zip(names, saved_names) if a != b]
                problems.append(f"group {i} parameter names differ: " + ", ".join(bad[:5]))
            s = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            if isinstance(s.get("betas"), (list, tuple)):
                s["betas"] = tuple(s["betas"])       # JSON turns tuples into lists
            missing = sorted(set(self.defaults) - set(s))
            if missing:
                problems.append(f"group {i} lacks hyper-parameters {missing}")
                continue
            try:
                self._check_group(s, f"group {i}")
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
                continue
            settings.append(s)
            for saved_id, p in zip(saved_ids, group["params"]):
                by_index[int(saved_id)] = (p, s)
        new_state = {}
        for key, buffers in dict(state_dict["state"]).items():
            try:
                p, s = by_index[int(key)]
            except (KeyError, TypeError, ValueError):
                problems.append(f"state {key!r} belongs to no parameter of the saved groups")
                continue
            expected = set(self._state_keys(s))
            got = set(buffers)
            if got != expected:
                problems.append(f"state {key}: expected entries {sorted(expected)}; "
                                f"got {sorted(got)}")
                continue
            entry = {}
            for k in sorted(expected):
                value = buffers[k]
                if k == "step":
                    try:
                        step = int(value)
                    except (TypeError, ValueError):
                        step = -1
                    if step < 0 or step != float(value):
                        problems.append(f"state {key}: step must be a whole number >= 0; "
                                        f"got {value!r}")
                    entry[k] = step
                elif tuple(getattr(value, "shape", ())) != tuple(p.data.shape):
                    problems.append(f"state {key}: {k} has shape "
                                    f"{tuple(getattr(value, 'shape', ()))}, expected "
                                    f"{tuple(p.data.shape)} (parameter's shape)")
                else:
                    entry[k] = value
            new_state[p] = entry
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        for group, s in zip(self.param_groups, settings):
            group.update(s)
        self.state = {p: {k: (v if k == "step" else _copy_like(v, p)) for k, v in entry.items()}
                      for p, entry in new_state.items()}

    def __repr__(self) -> str:
        n = sum(len(g["params"]) for g in self.param_groups)
        hp = ", ".join(f"{k}={self.param_groups[0][k]!r}" for k in self.defaults)
        more = f", {len(self.param_groups)} groups" if len(self.param_groups) > 1 else ""
        return f"{type(self).__name__}({hp}; {n} parameters{more})"


# --- SGD ------------------------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 decay.

    Math (torch.optim.SGD; one parameter p with gradient g; the gradient is
    read, never written):
        d = g + weight_decay * p                                 (1) L2 decay, into the gradient
        b = d                                  at the first step (2) momentum buffer,
        b = momentum * b + (1 - dampening) * d afterwards            starts at d, not 0
        d = d + momentum * b     (nesterov)                      (3) look ahead
        d = b                    (otherwise)
        p = p - lr * d                                           (4)
    With momentum = 0, steps (2) and (3) are skipped and SGD keeps no state.
    Nesterov needs momentum > 0 and dampening = 0 (as in PyTorch).

    State per parameter: ``momentum_buffer`` b (only with momentum).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _check_group(self, group: dict, where: str) -> None:
        _check_real(where, "lr", group["lr"], 0.0)
        _check_real(where, "momentum", group["momentum"], 0.0)
        _check_real(where, "weight_decay", group["weight_decay"], 0.0)
        _check_real(where, "dampening", group["dampening"])   # any value, as in PyTorch
        _check_bool(where, "nesterov", group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{where}: nesterov=True requires momentum > 0 and dampening = 0; "
                             f"got momentum={group['momentum']!r}, "
                             f"dampening={group['dampening']!r}")

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _step_group(self, group: dict) -> None:
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        momentum, dampening = float(group["momentum"]), float(group["dampening"])
        nesterov = group["nesterov"]
        for p in self._trainable(group):
            xp = get_array_module(p.data)
            d, scratch = p.grad, self._scratch(p, 2)
            if wd != 0.0:
                xp.multiply(p.data, wd, out=scratch[0])
                scratch[0] += d                                 # (1) d = g + wd p
                d = scratch[0]
            if momentum != 0.0:
                state = self.state.setdefault(p, {})
                b = state.get("momentum_buffer")
                if b is None:
                    b = state["momentum_buffer"] = d.copy()     # (2) first step: b = d
                else:
                    b *= momentum                               # (2) b = momentum b
                    if dampening == 0.0:
                        b += d                                  #     + d
                    else:
                        xp.multiply(d, 1.0 - dampening, out=scratch[1])
                        b += scratch[1]                         #     + (1 - dampening) d
                if nesterov:
                    xp.multiply(b, momentum, out=scratch[1])
                    scratch[1] += d                             # (3) d = d + momentum b
                    d = scratch[1]
                else:
                    d = b                                       # (3) d = b
            xp.multiply(d, lr, out=scratch[1])
            p.data -= scratch[1]                                # (4) p = p - lr d


# --- AdamW ----------------------------------------------------------------------

class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    Math (one parameter p with gradient g; m = v = v_max = 0 before step t = 1):
        t = t + 1
        p = p * (1 - lr * weight_decay)                      (1) decay, outside the moments
        m = m + (1 - beta1) * (g - m)                        (2) = beta1 m + (1 - beta1) g
        v = beta2 * v + (1 - beta2) * g * g                  (3) second moment
        v_max = max(v_max, v)          (amsgrad only)        (3a) and use v_max for v below
        bias_correction1 = 1 - beta1^t
        bias_correction2 = 1 - beta2^t
        step_size = lr / bias_correction1
        denom = sqrt(v) / sqrt(bias_correction2) + eps       (4)
        p = p - step_size * m / denom                        (5)
    i.e. p -= lr * m_hat / (sqrt(v_hat) + eps) with the bias-corrected
    m_hat = m / bias_correction1, v_hat = v / bias_correction2; eps is added
    after the square root and its correction, as in PyTorch.

    State per parameter: ``step`` t (int), ``exp_avg`` m, ``exp_avg_sq`` v,
    and ``max_exp_avg_sq`` v_max with amsgrad.

    ``flat=True``: each group's trainable parameters, their gradients and
    moments live in flat buffers (each ``p.data`` / ``p.grad`` becomes a view
    of them at construction, values unchanged), and a step runs the same
    arithmetic once over the whole buffer (the kernel table's
    ``adamw_flat_update``: in cache-sized blocks over the CPU threads under the
    "fast" kernels): equal to the per-parameter update, element for element.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 flat: bool = False):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad})
        _check_bool("AdamW", "flat", flat)
        self.flat = flat
        self._flat_groups: dict = {}                    # id(group) -> its flat buffers
        if flat:
            self._flatten()

    def _check_group(self, group: dict, where: str) -> None:
        _check_real(where, "lr", group["lr"], 0.0)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{where}: betas must be a pair (beta1, beta2); got {betas!r}")
        _check_real(where, "betas[0]", betas[0], 0.0, 1.0)
        _check_real(where, "betas[1]", betas[1], 0.0, 1.0)
        group["betas"] = tuple(betas)
        _check_real(where, "eps", group["eps"], 0.0)
        _check_real(where, "weight_decay", group["weight_decay"], 0.0)
        _check_bool(where, "amsgrad", group["amsgrad"])

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        names = ("step", "exp_avg", "exp_avg_sq")
        return (names + ("max_exp_avg_sq",)) if group["amsgrad"] else names

    def _step_group(self, group: dict) -> None:
        if self.flat and self._flat_ready(group):
            return self._step_flat(group)
        lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        amsgrad = group["amsgrad"]
        for p in self._trainable(group):
            xp = get_array_module(p.data)
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(p.data),
                                         "exp_avg_sq": xp.zeros_like(p.data)}
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
            state["step"] += 1
            _adamw_update(xp, p.data, p.grad, state["exp_avg"], state["exp_avg_sq"],
                          state.get("max_exp_avg_sq") if amsgrad else None,
                          *self._scratch(p, 2), lr=lr, wd=wd, beta1=beta1, beta2=beta2,
                          eps=eps, t=state["step"])

    # --- flat buffers: one update over every parameter of a group ------------
    def _flatten(self) -> None:
        """Move each group's trainable parameters into flat buffers: data, grad, moments.

        Each Parameter's ``.data`` and ``.grad`` become views of the group's
        buffers (values unchanged); its state entries are views of the
        moments' buffers. A step then updates the whole group with one pass of
        the same arithmetic.
        """
        for i, group in enumerate(self.param_groups):
            params = self._trainable(group)
            if not params:
                continue
            xps = {get_array_module(p.data).__name__ for p in params}
            dtypes = {p.data.dtype for p in params}
            if len(xps) > 1 or len(dtypes) > 1:
                raise ValueError(f"AdamW(flat=True): param group {i} mixes backends or dtypes "
                                 f"({sorted(xps)}, {sorted(map(str, dtypes))}); give each its "
                                 "own group or use flat=False")
            xp, dtype = get_array_module(params[0].data), params[0].data.dtype
            n = sum(p.data.size for p in params)
            buffers = {name: xp.zeros(n, dtype=dtype)
                       for name in ("data", "grad", "exp_avg", "exp_avg_sq")
                       + (("max_exp_avg_sq",) if group["amsgrad"] else ())}
            views, offset = [], 0
            for p in params:
                view = {name: b[offset:offset + p.data.size].reshape(p.data.shape)
                        for name, b in buffers.items()}
                view["data"][...] = p.data
                view["grad"][...] = p.grad
                p.data, p.grad = view["data"], view["grad"]
                views.append(view)
                offset += p.data.size
            self._flat_groups[id(group)] = {"params": params, "buffers": buffers,
                                            "views": views}

    def _flat_ready(self, group: dict) -> bool:
        """The group has flat buffers and every parameter still uses its views."""
        flat = self._flat_groups.get(id(group))
        return flat is not None and all(
            p.data is view["data"] and p.grad is view["grad"] and p.requires_grad
            for p, view in zip(flat["params"], flat["views"]))

    def _step_flat(self, group: dict) -> None:
        flat = self._flat_groups[id(group)]
        lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        amsgrad = group["amsgrad"]
        t = None
        for p, view in zip(flat["params"], flat["views"]):
            state = self.state.get(p)
            if state is None:                           # first step: state = views
                state = self.state[p] = {"step": 0, "exp_avg": view["exp_avg"],
                                         "exp_avg_sq": view["exp_avg_sq"]}
                if amsgrad:
                    state["max_exp_avg_sq"] = view["max_exp_avg_sq"]
            state["step"] += 1
            t = state["step"] if t is None else t
            if state["step"] != t:                      # steps differ (a partial load):
                return self._step_each(group, flat)     # parameter by parameter
        buf = flat["buffers"]                           # the update over the whole buffers, as
        table(buf["data"]).adamw_flat_update(           # the kernel table runs it (in blocks on
            _adamw_update, buf, amsgrad,                # the engine's threads, or at once)
            lr=lr, wd=wd, beta1=beta1, beta2=beta2, eps=eps, t=t)

    def _step_each(self, group: dict, flat: dict) -> None:
        """The flat group's update parameter by parameter, each with its own step count."""
        lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        for p in flat["params"]:
            state = self.state[p]
            _adamw_update(get_array_module(p.data), p.data, p.grad, state["exp_avg"],
                          state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                          *self._scratch(p, 2), lr=lr, wd=wd, beta1=beta1, beta2=beta2,
                          eps=eps, t=state["step"])

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zero (one fill per flat group)."""
        for group in self.param_groups:
            if self._flat_ready(group):
                flat = self._flat_groups[id(group)]
                flat["buffers"]["grad"].fill(0)
                flat_ids = {id(p) for p in flat["params"]}
                rest = [p for p in group["params"] if id(p) not in flat_ids]
            else:
                rest = group["params"]
            for p in rest:
                if p.grad is not None:
                    p.zero_grad()

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:                 # loaded moments go into the buffers
            flat = self._flat_groups.get(id(group))
            if flat is None:
                continue
            for p, view in zip(flat["params"], flat["views"]):
                state = self.state.get(p)
                if state is None:
                    continue
                for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if name in state and name in view:
                        view[name][...] = state[name]
                        state[name] = view[name]



def _adamw_update(xp, p, g, m, v, v_max, tmp, denom, *, lr, wd, beta1, beta2, eps, t):
    """One AdamW update of the arrays p, m, v (and v_max) from g, in place; the steps
    (1)-(5) of the class docstring. ``tmp`` and ``denom`` are scratch of p's shape."""
    if wd != 0.0:
        p *= 1.0 - lr * wd                              # (1)
    # (2) PyTorch's lerp: m + w (g - m) for w < 0.5, else g - (1 - w)(g - m);
    # the two forms round differently, so follow the same branch.
    w = 1.0 - beta1
    xp.subtract(g, m, out=tmp)                          # g - m
    if w < 0.5:
        tmp *= w
        m += tmp                                        # (2) m + w (g - m)
    else:
        tmp *= 1.0 - w
        xp.subtract(g, tmp, out=m)                      # (2) g - (1 - w)(g - m)
    v *= beta2
    xp.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    v += tmp                                            # (3) beta2 v + (1 - beta2) g g
    if v_max is not None:
        xp.maximum(v_max, v, out=v_max)                 # (3a)
        v = v_max

    bias_correction1 = 1.0 - beta1 ** t
    bias_correction2 = 1.0 - beta2 ** t
    step_size = lr / bias_correction1
    xp.sqrt(v, out=denom)
    denom /= bias_correction2 ** 0.5
    denom += eps                                        # (4)
    xp.multiply(m, step_size, out=tmp)
    tmp /= denom
    p -= tmp                                            # (5) p - step_size m / denom


# --- what a training loop needs around the optimizer ---------------------------

def param_groups_for_decay(model, weight_decay: float) -> list[dict]:
    """Two param groups, as transformers' Trainer makes them: weight decay on
    every weight except biases and LayerNorm weights, which get none.

    Parameters are given as ``(name, Parameter)`` pairs, so the names travel
    into the optimizer's state dict. Frozen parameters are left out.
    """
    from scratchlm.nn.layers import LayerNorm  # noqa: PLC0415 (nn sits below optim)

    no_decay = set()
    for _, module in model.named_modules():
        if isinstance(module, LayerNorm):
            no_decay.update((id(module.weight), id(module.bias)))
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = id(p) in no_decay or name.endswith("bias")
        (plain if skip else decay).append((name, p))
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def clip_grad_norm(params, max_norm) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Math:  n = sqrt(sum_p sum_i g_{p,i}^2);  if n > max_norm: g <- g * max_norm / (n + 1e-6)
    (PyTorch's clip_grad_norm_). ``max_norm=None`` only measures. Frozen
    parameters are not counted. Returns the norm before clipping.
    """
    grads = [p.grad for p in params if p.requires_grad]
    # One sum per parameter where it lives, then one number to the host: on a GPU, one
    # synchronisation a step instead of one per parameter.
    squares = [(g * g).sum() for g in grads]
    xp = get_array_module(*grads)
    total = math.sqrt(float(xp.stack(squares).sum(dtype="float64"))) if grads else 0.0
    if max_norm is not None:
        _check_real("clip_grad_norm", "max_norm", max_norm, 0.0)
        coef = max_norm / (total + 1e-6)
        if coef < 1.0:
            for g in grads:
                g *= coef
    return total


def lr_at_step(step: int, base_lr: float, max_steps: int, *, warmup_steps: int = 0,
               schedule: str = "cosine", min_lr_ratio: float = 0.0) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Math, with lr_min = base_lr * min_lr_ratio:
        warmup (step < W):   lr = base_lr * (step + 1) / W
        then, with progress p = (step - W) / (max_steps - W) in [0, 1]:
        "cosine":            lr = lr_min + (base_lr - lr_min) * (1 + cos(pi p)) / 2
        "linear":            lr = base_lr - (base_lr - lr_min) * p
        "constant":          lr = base_lr
    """
    if schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"lr_at_step: schedule must be 'cosine', 'linear' or 'constant'; "
                         f"got {schedule!r}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    lr_min = base_lr * min_lr_ratio
    p = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "linear":
        return base_lr - (base_lr - lr_min) * p
    return lr_min + (base_lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p))
