"""Shared test helpers: building any registered loss with the arguments it needs."""

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
