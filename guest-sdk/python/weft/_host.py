"""The generated bindings, and :func:`call`, which turns a failed host call
into the :mod:`weft.errors` exception for it."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from componentize_py_types import Err
from wit_world.imports import device as wit_device  # noqa: F401  (re-exported)
from wit_world.imports import graph as wit_graph  # noqa: F401
from wit_world.imports import session as wit_session  # noqa: F401
from wit_world.imports import types as wit_types  # noqa: F401
from wit_world.imports import variable as wit_variable  # noqa: F401

from . import errors

T = TypeVar("T")


def call(f: Callable[..., T], *args: Any) -> T:
    """``f(*args)``; a WIT error becomes its :class:`weft.errors.OpError`."""
    try:
        return f(*args)
    except Err as e:
        raise errors.from_wit(e.value) from None
