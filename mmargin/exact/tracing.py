"""Tracing a torch module into a :class:`~mmargin.exact.graph.Graph`.

:func:`trace` runs :func:`torch.fx.symbolic_trace`, propagates the shape of one sample
through the module and turns each supported operation into a graph node (see
:mod:`mmargin.exact.graph` for the node kinds); anything else raises
:class:`~mmargin.exact.graph.UnsupportedModel` naming the operation.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin.exact.graph import Affine, Graph, Node, UnsupportedModel

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["trace"]


_CACHE: weakref.WeakKeyDictionary[Any, dict[Any, Graph]] = weakref.WeakKeyDictionary()


def trace(module: Any, shape: Sequence[int], mean: Any = None, std: Any = None) -> Graph:
    """The graph of ``module`` on samples of ``shape`` (eval mode: batch norm with its
    running statistics, dropout off), after the input normalisation ``(x - mean) / std``
    given as flat per-feature arrays (``None``: none). Cached per module, shape and
    parameter version. Raises :class:`UnsupportedModel` naming what is not supported."""
    key = (tuple(shape), _key(mean), _key(std),
           tuple(p._version for p in module.parameters()),
           tuple(b._version for b in module.buffers()))  # fmt: skip
    per_module = _CACHE.setdefault(module, {})
    if key not in per_module:
        per_module.clear()
        per_module[key] = _Tracer(module, tuple(int(s) for s in shape)).build(mean, std)
    return per_module[key]


def _key(values: Any) -> Any:
    return None if values is None else np.asarray(values, dtype=np.float64).tobytes()


class _Tracer:
    """Turns one fx graph (with shapes from an example batch of two) into a :class:`Graph`."""

    def __init__(self, module: Any, shape: tuple[int, ...]) -> None:
        self.module = module
        self.shape = shape
        self.nodes: list[Node] = []

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def affine(self, src: int, op: Affine, name: str) -> int:
        return self.add(Node("affine", (src,), op.out_shape, op=op, name=name))

    def build(self, mean: Any, std: Any) -> Graph:
        import torch
        from torch import fx

        from mmargin.adapters import inference_mode_of

        try:
            gm = fx.symbolic_trace(self.module)
        except Exception as e:  # noqa: BLE001 - fx raises many kinds on dynamic code
            first = str(e).splitlines()[0] if str(e) else ""
            raise UnsupportedModel(f"torch.fx cannot trace the model: {type(e).__name__}: "
                                   f"{first}") from None  # fmt: skip
        modules = dict(gm.named_modules())
        example = torch.rand(2, *self.shape, dtype=torch.float64)
        env: dict[Any, Any] = {}  # fx node -> graph index | constant
        values: dict[Any, Any] = {}  # fx node -> example value
        with torch.no_grad(), inference_mode_of(self.module):
            interp = fx.Interpreter(_double(gm))
            for n in gm.graph.nodes:
                if n.op == "placeholder":
                    if self.nodes:
                        raise UnsupportedModel("a model with more than one input")
                    values[n] = example
                    env[n] = self._input(mean, std)
                    continue
                args = fx.node.map_arg(n.args, lambda a: values[a])
                kwargs = fx.node.map_arg(n.kwargs, lambda a: values[a])
                if n.op == "output":
                    out = args[0]
                    src = n.args[0]
                    if isinstance(out, (tuple, list)):
                        out, src = out[0], src[0]
                    if not isinstance(src, fx.Node) or not isinstance(env.get(src), int):
                        raise UnsupportedModel("a model whose output is not a tensor")
                    return self._finish(env[src])
                values[n] = getattr(interp, n.op)(n.target, args, kwargs)
                env[n] = self._node(n, modules, env, values)
        raise UnsupportedModel("a model without an output")  # pragma: no cover

    def _input(self, mean: Any, std: Any) -> int:
        import torch

        idx = self.add(Node("input", (), self.shape, name="input"))
        if mean is None and std is None:
            return idx
        d = int(np.prod(self.shape))
        m = np.zeros(d) if mean is None else np.asarray(mean, dtype=np.float64).ravel()
        s = np.ones(d) if std is None else np.asarray(std, dtype=np.float64).ravel()
        if not np.all(np.isfinite(s) & (s != 0)):
            raise UnsupportedModel("an input normalisation with a zero or non-finite std")
        w = torch.as_tensor((1.0 / s).reshape(self.shape))
        b = torch.as_tensor((-m / s).reshape(self.shape))
        return self.affine(idx, Affine("scale", self.shape, self.shape, w, b), "normalise")

    def _finish(self, out: int) -> Graph:
        if out != len(self.nodes) - 1:  # the output must be the last node
            raise UnsupportedModel("a model whose output is not its last operation")
        if len(self.nodes[out].shape) != 1:
            raise UnsupportedModel(f"outputs of shape {self.nodes[out].shape}, expected a "
                                   "vector of scores per sample")  # fmt: skip
        return Graph(tuple(self.nodes))

    def _shape(self, value: Any, what: str) -> tuple[int, ...]:
        import torch

        if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] != 2:
            raise UnsupportedModel(f"{what} does not keep the batch dimension")
        return tuple(int(s) for s in value.shape[1:])

    def _node(self, n: Any, modules: dict[str, Any], env: dict[Any, Any],
              values: dict[Any, Any]) -> Any:  # fmt: skip
        """Index of the graph node for fx node ``n`` (or a constant / ``None``)."""
        import torch

        if n.op == "get_attr" or not any(isinstance(env[a], int) for a in n.all_input_nodes):
            return values[n]  # a constant (sizes, shapes, buffers)
        out = values[n]
        if n.op == "call_module":
            return self._module(modules[n.target], n, env, out)
        name = _op_name(n)
        if n.op == "call_method" and n.target in ("size", "dim"):
            return values[n]
        if name in ("relu",) or n.target in (torch.relu, torch.nn.functional.relu):
            return self.add(Node("relu", (env[n.args[0]],), self._shape(out, name), name=name))
        reshapes = ("view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "getitem")
        if name in reshapes:
            src = env[n.args[0]]
            shape = self._shape(out, name)
            if int(np.prod(shape)) != self.nodes[src].size:  # indexing that selects entries
                raise UnsupportedModel(f"{name} that changes the sample size")
            return self.affine(src, Affine("reshape", self.nodes[src].shape, shape), name)
        if name in ("add", "sub", "mul", "truediv", "div", "iadd", "isub", "neg"):
            return self._arith(n, name, env, values, out)
        if name in ("linear", "conv1d", "conv2d"):  # functional forms, constant parameters
            return self._functional(n, name, env, values, out)
        if name in ("dropout", "identity"):
            return env[n.args[0]]
        if name in ("avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"):
            src = env[n.args[0]]
            fn = getattr(torch.nn.functional, name)
            params = dict(zip(_POOL_ARGS[name], n.args[1:], strict=False)) | dict(n.kwargs)
            op = Affine("avgpool", self.nodes[src].shape, self._shape(out, name),
                        params={"fn": fn, **params})  # fmt: skip
            return self.affine(src, op, name)
        if name in ("max_pool1d", "max_pool2d"):
            params = dict(zip(("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
                              n.args[1:], strict=False)) | dict(n.kwargs)  # fmt: skip
            return self._maxpool(env[n.args[0]], params, out, name, name.endswith("1d"))
        raise UnsupportedModel(f"the operation {name!r}")

    def _functional(self, n: Any, name: str, env: dict[Any, Any], values: dict[Any, Any],
                    out: Any) -> int:  # fmt: skip
        """``F.linear`` / ``F.conv1d`` / ``F.conv2d`` whose weight and bias do not depend on
        the input (a bare ``nn.Linear`` traces to ``F.linear``)."""
        import torch
        from torch import fx

        keys = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        args = dict(zip(keys, n.args, strict=False)) | dict(n.kwargs)
        for key in ("weight", "bias"):
            a = args.get(key)
            if isinstance(a, fx.Node) and isinstance(env[a], int):
                raise UnsupportedModel(f"{name} with a {key} that depends on the input")

        def const(a: Any) -> Any:
            v = values[a] if isinstance(a, fx.Node) else a
            return None if v is None else torch.as_tensor(v).detach().double().clone()

        w, b = const(args["weight"]), const(args.get("bias"))
        src = env[args["input"]]
        params = {k: args[k] for k in keys[3:] if k in args}
        if name != "linear":
            params = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1} | params
        op = Affine(name, self.nodes[src].shape, self._shape(out, name), w, b, params)
        return self.affine(src, op, name)

    def _module(self, m: Any, n: Any, env: dict[Any, Any], out: Any) -> Any:
        from torch import nn

        src = env[n.args[0]]
        shape_in = self.nodes[src].shape
        what = f"{type(m).__name__} ({n.target})"
        shape = self._shape(out, what)
        w = None if getattr(m, "weight", None) is None else m.weight.detach().double().clone()
        b = None if getattr(m, "bias", None) is None else m.bias.detach().double().clone()
        if isinstance(m, nn.Linear):
            return self.affine(src, Affine("linear", shape_in, shape, w, b), what)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros":
                raise UnsupportedModel(f"{what} with padding mode {m.padding_mode!r}")
            params = dict(stride=m.stride, padding=m.padding, dilation=m.dilation,
                          groups=m.groups)  # fmt: skip
            kind = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
            return self.affine(src, Affine(kind, shape_in, shape, w, b, params), what)
        if isinstance(m, (nn.ReLU,)):
            return self.add(Node("relu", (src,), shape, name=what))
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            return self.affine(src, Affine("reshape", shape_in, shape), what)
        if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
            return src
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self._batchnorm(m, src, shape, what)
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            import torch.nn.functional as F

            fn: Callable[..., Any]
            keys: tuple[str, ...]
            if isinstance(m, nn.AvgPool1d):
                fn, keys = F.avg_pool1d, ("kernel_size", "stride", "padding", "ceil_mode",
                                          "count_include_pad")  # fmt: skip
            elif isinstance(m, nn.AvgPool2d):
                fn, keys = F.avg_pool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                          "count_include_pad", "divisor_override")  # fmt: skip
            else:
                fn = F.adaptive_avg_pool1d if isinstance(m, nn.AdaptiveAvgPool1d) \
                    else F.adaptive_avg_pool2d  # fmt: skip
                keys = ("output_size",)
            params = {k: getattr(m, k) for k in keys}
            return self.affine(
                src, Affine("avgpool", shape_in, shape, params={"fn": fn, **params}), what
            )
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            params = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                          dilation=m.dilation, ceil_mode=m.ceil_mode)  # fmt: skip
            if m.return_indices:
                raise UnsupportedModel(f"{what} with return_indices")
            return self._maxpool(src, params, out, what, isinstance(m, nn.MaxPool1d))
        raise UnsupportedModel(f"the layer {what}")

    def _batchnorm(self, m: Any, src: int, shape: tuple[int, ...], what: str) -> int:
        import torch

        if m.running_mean is None or m.running_var is None:
            raise UnsupportedModel(f"{what} without running statistics")
        var = m.running_var.detach().double()
        scale = 1.0 / torch.sqrt(var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight.detach().double()
        shift = -m.running_mean.detach().double() * scale
        if m.bias is not None:
            shift = shift + m.bias.detach().double()
        extra = (1,) * (len(shape) - 1)
        w = scale.reshape(-1, *extra).expand(shape).clone()
        b = shift.reshape(-1, *extra).expand(shape).clone()
        return self.affine(src, Affine("scale", shape, shape, w, b), what)

    def _maxpool(self, src: int, params: dict[str, Any], out: Any, what: str,
                 one_d: bool) -> int:  # fmt: skip
        import torch
        import torch.nn.functional as F

        shape_in = self.nodes[src].shape
        shape = self._shape(out, what)
        params = {k: v for k, v in params.items() if v is not None}
        if params.get("ceil_mode"):
            raise UnsupportedModel(f"{what} with ceil_mode")
        probe = torch.arange(1, int(np.prod(shape_in)) + 1, dtype=torch.float64)
        probe = probe.reshape(1, *shape_in)
        if one_d:
            probe = probe.unsqueeze(-2)
            params = {k: v if k == "ceil_mode" else (0 if k == "padding" else 1, _first(v))
                      for k, v in params.items()}  # fmt: skip
        k = _pair(params["kernel_size"])
        stride = _pair(params.get("stride") or params["kernel_size"])
        cols = F.unfold(probe, k, dilation=_pair(params.get("dilation", 1)),
                        padding=_pair(params.get("padding", 0)), stride=stride)  # fmt: skip
        c = probe.shape[1]
        win = cols.reshape(c, k[0] * k[1], -1).permute(0, 2, 1).reshape(-1, k[0] * k[1])
        windows = win.round().long().numpy() - 1  # padding (0) becomes -1
        node = Node("maxpool", (src,), shape, windows=windows, name=what)
        if windows.shape[0] != node.size:
            raise UnsupportedModel(f"{what}: unexpected window layout")
        return self.add(node)

    def _arith(self, n: Any, name: str, env: dict[Any, Any], values: dict[Any, Any],
               out: Any) -> int:  # fmt: skip
        """``a ± b``, ``a * c``, ``a / c``, ``-a`` with at most one non-constant side for
        products (constants broadcast to the sample)."""
        import torch
        from torch import fx

        shape = self._shape(out, name)

        def side(a: Any) -> tuple[int | None, Any]:
            if isinstance(a, fx.Node) and isinstance(env[a], int):
                return env[a], None
            v = values[a] if isinstance(a, fx.Node) else a
            return None, v

        if name == "neg":
            src = env[n.args[0]]
            return self.add(Node("add", (src,), shape, signs=(-1.0,), name=name))
        (ia, ca), (ib, cb) = side(n.args[0]), side(n.args[1])
        if n.kwargs.get("alpha") not in (None, 1):
            raise UnsupportedModel(f"{name} with alpha")
        sign = -1.0 if name in ("sub", "isub") else 1.0
        if name in ("add", "sub", "iadd", "isub"):
            if ia is not None and ib is not None:
                if self.nodes[ia].shape != shape or self.nodes[ib].shape != shape:
                    raise UnsupportedModel(f"{name} that broadcasts two tensors")
                return self.add(Node("add", (ia, ib), shape, signs=(1.0, sign), name=name))
            if ia is None:  # constant ± node
                assert ib is not None
                w = torch.full(shape, sign, dtype=torch.float64)
                b = _const(ca, shape)
                return self.affine(ib, Affine("scale", shape, shape, w, b), name)
            return self.affine(ia, Affine("scale", shape, shape,
                                          torch.ones(shape, dtype=torch.float64),
                                          sign * _const(cb, shape)), name)  # fmt: skip
        if ia is not None and ib is not None:
            raise UnsupportedModel(f"{name} of two tensors that depend on the input")
        if name in ("truediv", "div"):
            if ia is None:
                raise UnsupportedModel(f"{name} by a tensor that depends on the input")
            if n.kwargs.get("rounding_mode") is not None:
                raise UnsupportedModel(f"{name} with rounding")
            w = 1.0 / _const(cb, shape)
            return self.affine(ia, Affine("scale", shape, shape, w, None), name)
        src, c = (ia, cb) if ia is not None else (ib, ca)
        assert src is not None
        return self.affine(src, Affine("scale", shape, shape, _const(c, shape), None), name)


_POOL_ARGS = {
    "avg_pool1d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                   "divisor_override"),
    "adaptive_avg_pool1d": ("output_size",),
    "adaptive_avg_pool2d": ("output_size",),
}  # fmt: skip


def _first(v: Any) -> Any:
    """A 1-d pooling parameter given as an int or a one-element tuple."""
    return v[0] if isinstance(v, (tuple, list)) else v


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _const(value: Any, shape: tuple[int, ...]) -> Tensor:
    """A constant (scalar or tensor, with or without the batch dimension) as a per-sample
    float64 tensor of ``shape``."""
    import torch

    t = torch.as_tensor(value, dtype=torch.float64).detach()
    if t.dim() == len(shape) + 1:
        if t.shape[0] != 1:
            raise UnsupportedModel("a constant that differs across the batch")
        t = t[0]
    try:
        return t.expand(shape).clone()
    except RuntimeError:
        raise UnsupportedModel(f"a constant of shape {tuple(t.shape)} on samples of shape "
                               f"{shape}") from None  # fmt: skip


def _op_name(n: Any) -> str:
    """A readable name for an fx node's operation (``relu``, ``add``, ``sigmoid`` ...)."""
    target = n.target
    if isinstance(target, str):
        return target
    if target in (operator.add, operator.iadd):
        return "add"
    if target in (operator.sub, operator.isub):
        return "sub"
    if target is operator.mul:
        return "mul"
    if target is operator.truediv:
        return "truediv"
    if target is operator.neg:
        return "neg"
    return str(getattr(target, "__name__", target))


def _double(gm: Any) -> Any:
    """A float64 copy of a traced module (to evaluate an example batch in float64)."""
    import copy

    return copy.deepcopy(gm).double()
