"""The networks of DAML (Duan et al. 2018) and DAML+SP (Zou et al. n.d.): the hard-negative
generator, the synthetic-positive generator and the metric head on cached features.

>>> import torch
>>> gen = HardNegativeGenerator(8)          # official architecture: 3D -> 512 -> D
>>> x = torch.randn(5, 8)
>>> gen(x, x, x).shape
torch.Size([5, 8])
>>> MetricHead(8, embedding_dim=4)(x).shape
torch.Size([5, 4])
>>> head = MetricHead(8, embedding_dim=8, hidden=8, init="identity")   # official head
>>> bool(torch.equal(head(x.relu()), x.relu()))
True
>>> LinearEmbedding(8, 4)(x).norm(dim=1).detach().round(decimals=4)   # fc + L2 norm
tensor([1., 1., 1., 1., 1.])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HardNegativeGenerator", "IdentityGenerator", "InterpolationGenerator",
           "LinearEmbedding", "MetricHead", "SyntheticPositiveGenerator"]


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, int(width)), nn.ReLU()]
        prev = int(width)
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


class HardNegativeGenerator(nn.Module):
    """DAML's hard-negative generator: an MLP over ``concat[anchor, positive, negative]``.

    dim: D, the size of the features it reads and writes (backbone features or embeddings).
    hidden: widths of the hidden ReLU layers; default ``(512,)`` gives ``3D -> 512 -> D``, which is
    the official ``1536 -> 512 -> 512`` for D = 512. out_activation: None (default, linear output,
    so signed features are reachable) or ``"relu"`` (for non-negative backbone features).
    normalize_output: L2-normalise the output (the official code does not).
    init_std: None (default: torch's initialisation) or the standard deviation of a normal
    initialisation of every weight, biases zero (official: 0.02, Chainer's ``Normal(0.02)``).

    forward(anchor (T, D), positive (T, D), negative (T, D)) -> synthetic negative (T, D).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (512,), out_activation: str | None = None,
                 normalize_output: bool = False, init_std: float | None = None):
        super().__init__()
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if out_activation not in (None, "relu"):
            raise ValueError(f"out_activation must be None or 'relu', got {out_activation!r}")
        self.dim = int(dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.out_activation = out_activation
        self.normalize_output = bool(normalize_output)
        self.net = _mlp(3 * self.dim, self.hidden, self.dim)
        if init_std is not None:
            if not init_std > 0:
                raise ValueError(f"init_std must be positive or None, got {init_std}")
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, float(init_std))
                    nn.init.zeros_(m.bias)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        for name, t in (("anchor", anchor), ("positive", positive), ("negative", negative)):
            if t.dim() != 2 or t.shape[1] != self.dim:
                raise ValueError(f"{name} must have shape (T, {self.dim}) for this generator, "
                                 f"got {tuple(t.shape)}")
        if not (anchor.shape[0] == positive.shape[0] == negative.shape[0]):
            raise ValueError("anchor, positive and negative must have the same number of rows, got "
                             f"{anchor.shape[0]}, {positive.shape[0]}, {negative.shape[0]}")
        out = self.net(torch.cat([anchor, positive, negative], dim=1))
        if self.out_activation == "relu":
            out = F.relu(out)
        if self.normalize_output:
            out = F.normalize(out, dim=1)
        return out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, out_activation={self.out_activation!r}, "
                f"normalize_output={self.normalize_output}")


class SyntheticPositiveGenerator(HardNegativeGenerator):
    """The synthetic-positive generator of Zou et al. n.d., ``g+ = G+([x, x+, x-])``: same MLP as
    :class:`HardNegativeGenerator`, trained on :func:`synthetic_positive_objective`.

    forward(anchor (T, D), positive (T, D), negative (T, D)) -> synthetic positive (T, D).
    """


class IdentityGenerator(nn.Module):
    """The control of a fair comparison: ``G(a, p, n) = n`` (``role="negative"``) or
    ``G(a, p, n) = p`` (``role="positive"``), no parameters, no objective.

    ``fit_adversarial(..., generator="identity")`` runs DAML's (or DAML+SP's) schedule,
    triples, ``J_m``, routing and optimisers with this generator: the metric then learns from
    the real negative (and positive) exactly where DAML puts the synthetic one, so the
    difference to DAML is the generator and nothing else (same negatives per anchor, same
    steps, same learning rates).
    """

    is_identity = True

    def __init__(self, dim: int, role: str = "negative"):
        super().__init__()
        if role not in ("negative", "positive"):
            raise ValueError(f"role must be 'negative' or 'positive', got {role!r}")
        self.dim, self.role = int(dim), role

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        return negative if self.role == "negative" else positive

    def extra_repr(self) -> str:
        return f"dim={self.dim}, role={self.role!r}"


class InterpolationGenerator(nn.Module):
    """A parameter-free generator: a fixed point between the anchor and the real negative,
    ``G(a, p, n) = a + t (n - a)`` (``role="negative"``, default ``t = 0.5``: the midpoint),
    or between anchor and positive for ``role="positive"`` (``a + t (p - a)``, the minimiser
    of the synthetic-positive objective for ``lambda1 = t / (1 - t)``), optionally through a
    ReLU (``out_activation="relu"``, as the official generator's output layer).

    The ablation's stand-in for DAML's learned generator (:mod:`dmlkit.adversarial.ablation`):
    no parameters, so whatever it changes in a run comes from the fixed harder negative and
    from the generator terms the routing sends into the trunk. Linear interpolation toward the
    anchor is the idea of Zheng et al. 2019 (*Hardness-Aware Deep Metric Learning*, there with
    an adaptive t and a learned map back to the label) and Ko & Gu 2020 (*Embedding
    Expansion*, points between pairs of embeddings); here t is fixed and nothing is learned.

    >>> a, n = torch.zeros(1, 2), torch.tensor([[2.0, -4.0]])
    >>> InterpolationGenerator(2)(a, a, n)
    tensor([[ 1., -2.]])
    >>> InterpolationGenerator(2, out_activation="relu")(a, a, n)
    tensor([[1., 0.]])
    """

    is_identity = False

    def __init__(self, dim: int, t: float = 0.5, role: str = "negative",
                 out_activation: str | None = None):
        super().__init__()
        if role not in ("negative", "positive"):
            raise ValueError(f"role must be 'negative' or 'positive', got {role!r}")
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"the interpolation t must lie in [0, 1], got {t}")
        if out_activation not in (None, "relu"):
            raise ValueError(f"out_activation must be None or 'relu', got {out_activation!r}")
        self.dim, self.t, self.role = int(dim), float(t), role
        self.out_activation = out_activation

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        other = negative if self.role == "negative" else positive
        out = anchor + self.t * (other - anchor)
        return F.relu(out) if self.out_activation == "relu" else out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, t={self.t}, role={self.role!r}, out={self.out_activation}"


class MetricHead(nn.Module):
    """The metric ``f``: features (N, D) -> embeddings (N, E).

    kind="mlp": the official code's extra 2-layer head ``D -> hidden -> E`` (ReLU between);
    kind="linear": one linear map ``D -> E``.
    init: "default" (torch's initialisation) or "identity" (the official "Discriminator": every
    weight matrix the identity, ``torch.nn.init.eye_``, biases zero). For
    ``D = hidden = E`` (official 512 -> 512 -> ReLU -> 512) the head starts as ``relu(x)``,
    the identity on non-negative features; for other widths ``eye_`` puts ones on the leading
    diagonal of each rectangular matrix, so the head starts as the first ``min(D, hidden, E)``
    coordinates of ``relu(x)`` (zeros beyond). Chainer's code applies the same matrices; the
    ReLU between the layers is why the head equals the identity only on non-negative inputs.
    """

    def __init__(self, in_dim: int, embedding_dim: int = 64, kind: str = "mlp", hidden: int = 512,
                 init: str = "default"):
        super().__init__()
        if kind not in ("mlp", "linear"):
            raise ValueError(f"unknown head kind {kind!r}; known kinds: 'mlp', 'linear'")
        if init not in ("default", "identity"):
            raise ValueError(f"unknown head init {init!r}; known: 'default', 'identity'")
        self.in_dim, self.embedding_dim, self.kind = int(in_dim), int(embedding_dim), kind
        self.init = init
        self.net = (_mlp(self.in_dim, (hidden,), self.embedding_dim) if kind == "mlp"
                    else nn.Linear(self.in_dim, self.embedding_dim))
        if init == "identity":
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.eye_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"the metric head expects features of shape (N, {self.in_dim}), "
                             f"got {tuple(x.shape)}")
        return self.net(x)


class LinearEmbedding(nn.Module):
    """A trainable trunk on cached features: ``L2normalise(W x + b)``, (N, D) -> (N, E).

    The official trunk ends in GoogLeNet's fc layer and an L2 normalisation, and the generator
    reads that output; on frozen backbone features this layer is the trainable part of the
    trunk (``preset="official"`` builds one when no ``trunk`` is given).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.fc = nn.Linear(self.in_dim, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(x), dim=1)
