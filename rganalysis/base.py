"""The estimator base shared by every fitted object (scikit-learn's conventions).

Parameters are the arguments of ``__init__``, stored unchanged under the same names; ``fit`` returns
``self``; fitted results end in ``_``.  :meth:`Estimator.get_params` and ``repr`` read the parameters
from the ``__init__`` signature, so they cannot drift from it.
"""

from __future__ import annotations

import inspect
from typing import Any

from rganalysis.errors import InvalidParameterError, NotFittedError

__all__ = ["Estimator"]


class Estimator:
    """Base class: ``get_params``, ``set_params`` and a ``repr`` listing every parameter."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, by name."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set constructor parameters by name (unknown names raise); returns self."""
        known = set(self._param_names())
        unknown = sorted(set(params) - known)
        if unknown:
            raise InvalidParameterError(
                f"{type(self).__name__} has no parameter(s) {unknown}; known: {sorted(known)}"
            )
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __getattr__(self, name: str) -> Any:
        # only reached for a missing attribute: a fitted result (``*_``) before ``fit`` says so by name
        if name.endswith("_") and not name.startswith("_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted ({name} is set by fit): call fit(...) first"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
