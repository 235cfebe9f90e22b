"""A faster `__init__` for a frozen, slotted dataclass (issue #20).

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__`,
looked up anew for every field (its own `__setattr__` refuses). In the profile of a
streamed request the `__init__`s of `Usage` (a Claude stream makes four) and
`UsageEvent` (twenty-six fields, one per request) cost about twice what setting the
fields through their slots' own setters costs: `slot_init` swaps in an `__init__` that
does that, each setter bound once.

Everything else stays the dataclass's: its fields, their order, defaults and keyword-only
marks (the parameters are built from `dataclasses.fields`), `__eq__`, `__hash__`,
`__repr__`, `replace`, pickling, and the frozen `__setattr__`. A class it cannot do exactly
(no slots, a `default_factory`, a `__post_init__`, positional and keyword-only fields
mixed) is refused when it is decorated, not served a different `__init__`.
tests/adapters/test_slot_init.py holds each decorated class to the `__init__` the
dataclass generates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["slot_init"]

T = TypeVar("T")


def slot_init(cls: type[T]) -> type[T]:
    """Decorate a `@dataclass(frozen=True, slots=True)` class (applied above it)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: slot_init needs slots and no __post_init__")
    keyword_only = {field.kw_only for field in fields}
    if len(keyword_only) > 1:
        raise TypeError(f"{cls.__name__}: slot_init takes all fields positional or all keyword-only")
    namespace: dict[str, Any] = {}
    parameters, lines = [], []
    for index, field in enumerate(fields):
        if field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: slot_init takes no default_factory")
        if field.default is dataclasses.MISSING:
            parameters.append(field.name)
        else:
            namespace[f"_default{index}"] = field.default
            parameters.append(f"{field.name}=_default{index}")
        namespace[f"_set{index}"] = cls.__dict__[field.name].__set__
        lines.append(f"    _set{index}(self, {field.name})")
    star = "*, " if keyword_only == {True} else ""
    source = f"def __init__(self, {star}{', '.join(parameters)}):\n" + ("\n".join(lines) or "    pass") + "\n"
    exec(source, namespace)  # noqa: S102 (the source is built above from the class's own field names)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{field.name: field.type for field in fields}, "return": None}
    init.__doc__ = "The dataclass's `__init__`, each field set through its slot's setter (adapters/slot_init.py)."
    #: The dataclass's own, kept for the tests that compare the two.
    cls.__dataclass_init__ = cls.__init__  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
