"""deepmd-kit's network nodes as TorchScript-able modules built from the model dict: Layer,
EmbeddingNetwork / FittingNetwork (a sequence of Layers), NetworkCollection, LayerNorm, TypeEmbedNet,
and the activations (deepmd-kit's network.py, MATH.md N1-N7). Weights are buffers in the node's own
precision; a module computes in the dtype of its weights."""

import copy
import math
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from deepmd.dpkit.serialization import UnsupportedModel, check_version, require, variables

PRECISIONS = {"float64": torch.float64, "default": torch.float64, "double": torch.float64,
              "float32": torch.float32, "single": torch.float32}


def precision_dtype(name: Any, where: str) -> torch.dtype:
    if name not in PRECISIONS:
        raise UnsupportedModel(f"{where}: precision {name!r} is not supported (float64, float32, default)")
    return PRECISIONS[name]


def tensor(array: Optional[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    """A stored array as a tensor of `dtype` (an empty tensor for None)."""
    if array is None:
        return torch.zeros(0, dtype=dtype)
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


# Activation kinds. TorchScript dispatches on an int and cannot read module-level names in forward,
# so forward spells the numbers out: 0 linear, 1 tanh, 2 relu, 3 gelu, 4 relu6, 5 softplus,
# 6 sigmoid, 7 silu, 8 silut.
_NAMES = {"linear": 0, "none": 0, "tanh": 1, "relu": 2, "gelu": 3, "gelu_tf": 3, "relu6": 4, "softplus": 5,
          "sigmoid": 6, "silu": 7}
_SILUT = 8


class Activation(torch.nn.Module):
    """deepmd-kit's get_activation_fn: tanh, relu, gelu/gelu_tf (tanh form), relu6, softplus, sigmoid,
    silu, silut:T / custom_silu:T (silu below T, tanh continuation above; T defaults to 3), linear/none."""

    def __init__(self, name: Optional[str], where: str = "activation_function"):
        super().__init__()
        key = "none" if name is None else str(name).lower()
        self.threshold, self.slope, self.const = 0.0, 0.0, 0.0
        if key.startswith("silut") or key.startswith("custom_silu"):
            self.kind = _SILUT
            t = float(key.split(":")[-1]) if ":" in key else 3.0
            sig = 1.0 / (1.0 + math.exp(-t))
            self.threshold, self.slope, self.const = t, sig + t * sig * (1.0 - sig), t * sig
        elif key in _NAMES:
            self.kind = _NAMES[key]
        else:
            raise UnsupportedModel(f"{where}: activation {name!r} is not one deepmd-kit defines")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == 0:
            return x
        if k == 1:
            return torch.tanh(x)
        if k == 7:
            return x * torch.sigmoid(x)
        if k == 8:
            return torch.where(x < self.threshold, x * torch.sigmoid(x),
                               torch.tanh(self.slope * (x - self.threshold)) + self.const)
        if k == 2:
            return x * (x > 0).to(x.dtype)
        if k == 3:
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
        if k == 4:
            return torch.where(x < 0, torch.zeros_like(x), torch.where(x > 6, torch.full_like(x, 6.0), x))
        if k == 5:
            positive = x > 0
            e = torch.exp(torch.where(positive, -x, x))
            return torch.where(positive, x + torch.log(1 + e), torch.log(1 + e))
        return torch.sigmoid(x)


class Layer(torch.nn.Module):
    """y = φ(x W + b) [· idt] [+ x or + (x, x) when resnet and out = in or 2 in] (N1)."""

    def __init__(self, node: Dict[str, Any], where: str = "Layer"):
        super().__init__()
        check_version(node, where, 1, 2)
        v = variables(node)
        w = require(v, where + ".@variables", "w")
        if w is None or np.ndim(w) != 2:
            raise UnsupportedModel(f"{where}: weight w must be a matrix")
        dtype = precision_dtype(node.get("precision", "float64"), where)
        self.num_in, self.num_out = int(w.shape[0]), int(w.shape[1])
        self.register_buffer("w", tensor(w, dtype))
        b, idt = v.get("b"), v.get("idt")
        self.has_bias, self.has_idt = b is not None, idt is not None
        self.register_buffer("b", tensor(None if b is None else np.ravel(b), dtype))
        self.register_buffer("idt", tensor(None if idt is None else np.ravel(idt), dtype))
        for name, arr in (("b", b), ("idt", idt)):
            if arr is not None and np.size(arr) != self.num_out:
                raise UnsupportedModel(f"{where}: {name} has {np.size(arr)} entries for {self.num_out} outputs")
        self.activation = Activation(node.get("activation_function"), where + ".activation_function")
        resnet = bool(node.get("resnet", False))
        self.residual = 1 if resnet and self.num_out == self.num_in else (
            2 if resnet and self.num_out == 2 * self.num_in else 0)

    def columns(self, index: torch.Tensor) -> "Layer":
        """This layer's outputs `index` alone, as a layer of their own (the activation and idt act per output,
        so they select with them); not for a residual layer, whose output mixes in its input."""
        if self.residual != 0:
            raise ValueError("a residual layer's outputs cannot be selected on their own")
        part = copy.deepcopy(self)
        part.w = self.w[:, index].contiguous()
        part.b = self.b[index].contiguous() if self.has_bias else self.b
        part.idt = self.idt[index].contiguous() if self.has_idt else self.idt
        part.num_out = int(index.numel())
        return part

    def finish(self, xw: torch.Tensor) -> torch.Tensor:
        """φ(xw + b) [· idt]: the layer past its product x·W (and before any residual)."""
        if self.has_bias:
            xw = xw + self.b
        xw = self.activation(xw)
        if self.has_idt:
            xw = xw * self.idt
        return xw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w.shape[0] == 1:
            # one input channel (DPA3's edge and angle embeddings of distances and cosines): x·W is an outer
            # product, the same single multiplication per output as the matmul, several times faster
            y = x * self.w[0]
        else:
            y = torch.matmul(x, self.w)
        y = self.finish(y)
        if self.residual == 1:
            y = y + x
        elif self.residual == 2:
            y = y + torch.cat([x, x], dim=-1)
        return y


class Network(torch.nn.Module):
    """EmbeddingNetwork or FittingNetwork: its Layers in sequence (each Layer carries its own flags)."""

    def __init__(self, node: Dict[str, Any], where: str = "network"):
        super().__init__()
        cls = node.get("@class")
        if cls not in ("EmbeddingNetwork", "FittingNetwork", "NativeNet", None):
            raise UnsupportedModel(f"{where}: @class {cls!r} is not a network deepmd-kit writes")
        check_version(node, where, 1, 2)
        layers = require(node, where, "layers")
        self.layers = torch.nn.ModuleList([Layer(l, f"{where}.layers[{i}]") for i, l in enumerate(layers)])
        self.dim_in = self.layers[0].num_in if len(layers) else 0
        self.dim_out = self.layers[-1].num_out if len(layers) else 0
        self.dtype = self.layers[0].w.dtype if len(layers) else torch.float64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def first_weight_blocks(self, widths: List[int]) -> Optional[List[torch.Tensor]]:
        """The first layer's weight cut into row blocks of `widths` (input blocks), for forward_blocks;
        None when its output mixes in its input (residual), which the blocks cannot give."""
        first = self.layers[0]
        if first.residual != 0 or sum(widths) != first.num_in:
            return None
        return [b.contiguous() for b in torch.split(first.w, widths, dim=0)]

    def forward_blocks(self, xw: torch.Tensor) -> torch.Tensor:
        """The network on an input x whose product with the first layer's weight the caller formed by
        blocks (x·W = Σ_b x_b·W_b, first_weight_blocks): a block that depends on atom types only is a
        product per atom gathered per neighbour instead of one per neighbour (pair), and no input
        gradient is formed for it."""
        for i, layer in enumerate(self.layers):
            xw = layer.finish(xw) if i == 0 else layer(xw)
        return xw


class NetworkCollection(torch.nn.Module):
    """Networks indexed by type tuples: flat index t0 + t1 * ntypes + ... (ndim 0: one network).
    Missing networks (None in the file) are kept as empty Networks with present[i] False."""

    def __init__(self, node: Dict[str, Any], where: str = "NetworkCollection"):
        super().__init__()
        check_version(node, where, 1, 1)
        self.ndim = int(node.get("ndim", 0))
        self.ntypes = int(node.get("ntypes", 0))
        nets = require(node, where, "networks")
        if len(nets) != self.ntypes ** self.ndim:
            raise UnsupportedModel(f"{where}: {len(nets)} networks for ndim {self.ndim} and ntypes {self.ntypes} "
                                   f"(expected {self.ntypes ** self.ndim})")
        empty = {"layers": []}
        self.present = [n is not None for n in nets]
        self.networks = torch.nn.ModuleList([Network(n if n is not None else empty, f"{where}.networks[{i}]")
                                             for i, n in enumerate(nets)])

    def index(self, key: List[int]) -> int:
        flat = 0
        for i, t in enumerate(key):
            flat += t * self.ntypes ** i
        return flat


class LayerNorm(torch.nn.Module):
    """(x − mean) / sqrt(var + eps) · w + b over the last dimension, biased variance (N5)."""

    def __init__(self, node: Dict[str, Any], where: str = "LayerNorm"):
        super().__init__()
        check_version(node, where, 1, 1)
        v = variables(node)
        dtype = precision_dtype(node.get("precision", "float64"), where)
        w = require(v, where, "w")
        self.num_in = int(np.size(w))
        self.eps = float(node.get("eps", 1e-5))
        self.register_buffer("w", tensor(np.ravel(w), dtype))
        b = v.get("b")
        self.register_buffer("b", tensor(np.ravel(b) if b is not None else np.zeros(self.num_in), dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, [self.num_in], self.w, self.b, self.eps)


def type_embedding_table(node: Dict[str, Any], where: str = "type_embedding") -> torch.Tensor:
    """TypeEmbedNet (N7): the table [ntypes + 1, tebd_dim], embedding(eye(ntypes)) in the network's
    precision with a zero row appended for padded neighbours (type −1 maps to it). It does not depend
    on coordinates, so it is computed once here."""
    check_version(node, where, 1, 2)
    if node.get("use_econf_tebd", False):
        raise UnsupportedModel(f"{where}: use_econf_tebd=True (electron-configuration type embedding) is not "
                               "supported; train with use_econf_tebd false")
    net = Network(require(node, where, "embedding"), where + ".embedding")
    ntypes = int(require(node, where, "ntypes"))
    if net.dim_in != ntypes:
        raise UnsupportedModel(f"{where}: embedding input width {net.dim_in} differs from ntypes {ntypes}")
    with torch.no_grad():
        table = net(torch.eye(ntypes, dtype=net.dtype))
    return torch.cat([table, torch.zeros(1, table.shape[1], dtype=table.dtype)], dim=0)
