"""Shared test helpers: building any registered loss with the arguments it needs; a loss's
value and its gradients with respect to every floating-point input."""

from dmlkit import losses

#: constructor arguments for losses that need more than their defaults
LOSS_KWARGS = {
    "osm_caa": dict(num_classes=8, embedding_dim=6),
    "proxy_anchor": dict(num_classes=8, embedding_dim=6),
    "proxy_nca": dict(num_classes=8, embedding_dim=6),
}


def build_loss(name: str, **overrides):
    kwargs = dict(LOSS_KWARGS.get(name, {}))
    kwargs.update(overrides)
    return losses.build(name, **kwargs)


def value_and_grads(loss, *args):
    """``(value, [grad of each floating-point argument])`` of ``loss(*args)`` on fresh leaves."""
    leaves = [a.detach().clone().requires_grad_(True) if a.is_floating_point() else a
              for a in args]
    value = loss(*leaves)
    value.backward()
    return value.detach(), [a.grad for a in leaves if a.is_floating_point()]
