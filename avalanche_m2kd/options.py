"""Validation of option values, with one message shape for every option.

Every check of an option's value in the package goes through these functions, so each
rule is written once: the option objects of :mod:`avalanche_m2kd.option_types` call them
with the strategy's names, the plugins with their own (``weight``, ``loss``, ...). Each
returns the value it was given, and raises
``ValueError("Expected argument `name` to be ..., but got ...")``.
"""

from __future__ import annotations

from typing import Any, get_args

__all__ = ["check_bool", "check_choice", "check_int", "check_number"]


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


def check_number(value: Any, name: str, minimum: float = 0.0, strict: bool = False) -> Any:
    """Return ``value`` if it is an int or float ``>= minimum`` (``> minimum`` if ``strict``).

    Example:
        >>> check_number(0.5, "weight")
        0.5
        >>> check_number(0, "temperature", strict=True)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `temperature` to be a number > 0, but got 0
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or value < minimum or (strict and value == minimum):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"Expected argument `{name}` to be a number {bound}, but got {value!r}")
    return value


def check_int(value: Any, name: str, minimum: int = 0) -> Any:
    """Return ``value`` if it is an int (not a bool) ``>= minimum``.

    Example:
        >>> check_int(2.5, "mem_size")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `mem_size` to be an int >= 0, but got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected argument `{name}` to be an int >= {minimum}, but got {value!r}")
    return value


def check_bool(value: Any, name: str) -> Any:
    """Return ``value`` if it is a bool.

    Example:
        >>> check_bool(1, "recalibrate_bn")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `recalibrate_bn` to be a bool, but got 1
    """
    if not isinstance(value, bool):
        raise ValueError(f"Expected argument `{name}` to be a bool, but got {value!r}")
    return value
