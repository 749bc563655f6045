"""Adding a named object to one of the harness's registries (methods, data sets).

>>> table: dict[str, object] = {}
>>> class Item:
...     name = "x"
>>> item = add(table, Item(), "method")
>>> list(table)
['x']
>>> add(table, Item(), "method")
Traceback (most recent call last):
...
ValueError: A method named 'x' is already registered
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Named(Protocol):
    """Anything a registry holds: it has a ``name``."""

    @property
    def name(self) -> str:
        """Its registry name; read-only, so that a class's ``ClassVar[str]`` will do."""
        ...


T = TypeVar("T", bound=Named)


def add(table: dict[str, T], item: T, kind: str) -> T:
    """Put ``item`` in ``table`` under its name and return it.

    Raises:
        ValueError: the name is taken (``kind`` names what the table holds).
    """
    if item.name in table:
        raise ValueError(f"A {kind} named {item.name!r} is already registered")
    table[item.name] = item
    return item
