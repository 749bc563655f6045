"""Validation of option values, with one message shape for every option."""

from __future__ import annotations

from typing import Any, get_args

__all__ = ["check_choice"]


def check_choice(value: Any, choices: Any, name: str) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError``.

    Args:
        value: the value given.
        choices: a ``Literal[...]`` type (its arguments are the choices) or a tuple.
        name: the argument's name, as the caller knows it.

    Example:
        >>> from typing import Literal
        >>> check_choice("all", Literal["all", "last"], "teachers")
        'all'
        >>> check_choice("first", Literal["all", "last"], "teachers")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `teachers` to be one of ('all', 'last'), but got 'first'
    """
    allowed = tuple(get_args(choices)) or tuple(choices)
    if isinstance(value, str) and value in allowed:
        return value
    raise ValueError(f"Expected argument `{name}` to be one of {allowed}, but got {value!r}")
