"""Imports every loss module so that its ``@register`` decorators run.

Modules that do not exist yet are skipped: each family of losses lives in its own file.
"""

import importlib

_MODULES = [
    "contrastive", "triplet", "lifted", "npair", "angular", "ddml",
    "binomial", "multi_similarity", "osm_caa",
]

for _name in _MODULES:
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as _exc:  # a family not written yet
        if _exc.name != f"{__package__}.{_name}":
            raise
