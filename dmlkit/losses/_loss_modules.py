"""Imports every loss module so that its ``@register`` decorators run (one family per file)."""

from . import (  # noqa: F401
    angular,
    binomial,
    contrastive,
    ddml,
    lifted,
    multi_similarity,
    npair,
    osm_caa,
    triplet,
)
