"""Every CF model adapter, one module (or subpackage) per model over :class:`raysearch.cf.base.CFModel`.

Importing this package registers them all in ``CF_MODELS`` (timm's ``models/__init__.py``
pattern); ``import raysearch.cf`` does it.  Cornac and torch are imported inside ``build``,
so registering costs nothing.  A new model: a module here with a ``@register_cf_model``
class, and one import line below.
"""
from raysearch.cf.models import bivaecf, bpr, gmf, vaecf, wmf  # noqa: F401

__all__ = ["bivaecf", "bpr", "gmf", "vaecf", "wmf"]
