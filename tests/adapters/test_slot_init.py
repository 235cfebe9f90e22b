"""`adapters.slot_init` (issue #20): each decorated class's `__init__` takes what the
dataclass's own takes (names, order, kinds, defaults) and makes the same instance, and a
class it could not serve exactly is refused when decorated."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slot_init import slot_init
from adapters.usage import Usage
from metering.events import UsageEvent
from metering.quotas import Selection
from tests.adapters.strategies import fuzz

_DECORATED = [Usage, UsageEvent, Selection]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=8), st.tuples(st.text(max_size=4), st.text(max_size=4)).map(lambda t: (t,)))


def _shape(init: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(init).parameters.values()]


@pytest.mark.parametrize("cls", _DECORATED, ids=lambda cls: cls.__name__)
def test_the_parameters_are_the_dataclass_s_own(cls: type) -> None:
    assert cls.__init__ is not cls.__dataclass_init__  # type: ignore[attr-defined]
    assert _shape(cls.__init__) == _shape(cls.__dataclass_init__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", _DECORATED, ids=lambda cls: cls.__name__)
@fuzz(60)
@given(data=st.data())
def test_it_makes_what_the_dataclass_s_own_makes(cls: type, data: st.DataObject) -> None:
    """Any values, any of the optional fields left out, by keyword (or by position where the
    fields are positional): the same fields, equal and hashed alike, frozen, pickled whole."""
    fields = dataclasses.fields(cls)
    given_fields = [f for f in fields if f.default is dataclasses.MISSING or data.draw(st.booleans())]
    kwargs = {f.name: data.draw(_VALUES, label=f.name) for f in given_fields}
    made = cls(**kwargs)
    reference = object.__new__(cls)
    cls.__dataclass_init__(reference, **kwargs)  # type: ignore[attr-defined]
    assert [getattr(made, f.name) for f in fields] == [getattr(reference, f.name) for f in fields]
    assert made == reference and hash(made) == hash(reference) and repr(made) == repr(reference)
    assert pickle.loads(pickle.dumps(made)) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, fields[0].name, 1)
    if not fields[0].kw_only and given_fields == list(fields[: len(given_fields)]):
        assert cls(*kwargs.values()) == made


def test_keyword_only_and_required_fields_are_enforced_as_before() -> None:
    with pytest.raises(TypeError):
        UsageEvent("id")  # type: ignore[misc]
    with pytest.raises(TypeError):
        UsageEvent(request_id="id")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Usage(1, 2, 3, 4, 5, 6, False, None, None, "one too many")  # type: ignore[call-arg]


def test_what_it_cannot_serve_exactly_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int = 0

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int = 0

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Mixed:
        a: int
        b: int = dataclasses.field(default=0, kw_only=True)

    for cls in (NoSlots, Factory, PostInit, Mixed):
        with pytest.raises(TypeError):
            slot_init(cls)
