"""A faster `__init__` for a frozen, slotted, keyword-only dataclass (`UsageEvent`).

A frozen dataclass's `__init__` sets each field with `object.__setattr__(self, name,
value)`: a global lookup, an attribute lookup and a generic setattr that looks the name
up on the type again, ≈ 0.2 µs a field. `UsageEvent` has 26 fields and is made once per
request on the proxy's hot path (and again by `dataclasses.replace`): ≈ 5 µs, more than
writing its journal line (issue #20). Calling each slot's own descriptor (`__set__`,
bound once) does the same store in a third of the time.

The instance is the same: the dataclass keeps its fields, `__eq__`, `__hash__`, `__repr__`
and frozenness (only `__init__` is replaced, and it stores what the dataclass's would,
field by field, defaults included). Only for what it was written for: frozen, slots,
keyword-only, no `default_factory`, no `__post_init__`, no `InitVar` (checked).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["with_slot_init"]

_Class = TypeVar("_Class", bound=type)


def with_slot_init(cls: _Class) -> _Class:
    """`cls` with its `__init__` replaced by one that sets the slots directly."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    fields = dataclasses.fields(cls)
    if (not params.frozen or "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__")
            or any(not f.kw_only or not f.init or f.default_factory is not dataclasses.MISSING for f in fields)):
        raise TypeError(f"{cls.__name__}: with_slot_init is for frozen, slotted, keyword-only dataclasses")
    namespace: dict[str, Any] = {}
    parameters, body = [], []
    for f in fields:
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            parameters.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    source = f"def __init__(self, *, {', '.join(parameters)}):\n{''.join(body)}"
    exec(source, namespace)  # noqa: S102 - our own text, made of the dataclass's field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls
