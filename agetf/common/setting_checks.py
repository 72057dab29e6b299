"""Checks of one setting each, for the configs' dataclasses: a UsageError naming the flag and
the allowed values. No TensorFlow."""

from agetf import UsageError


def shown(value):
    """A value as a message shows it: floats without trailing zeros."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def at_least(flag, value, minimum, meaning=""):
    if not value >= minimum:  # `not >=`: NaN fails too
        raise UsageError(f"--{flag}={shown(value)} must be >= {minimum}{meaning}")


def positive(flag, value):
    """> 0; None passes."""
    if value is not None and not value > 0:
        raise UsageError(f"--{flag}={shown(value)} must be > 0")


def within(flag, value, low, high, ends, example):
    """`value` in the interval low..high; `ends`: (low allowed, high allowed). None passes."""
    if value is None:
        return
    low_ok, high_ok = ends
    above = low <= value if low_ok else low < value
    below = value <= high if high_ok else value < high
    if not (above and below):
        interval = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
        raise UsageError(f"--{flag}={shown(value)} must be in {interval}, e.g. --{flag}={example}")


def one_of(flag, value, allowed):
    if value not in allowed:
        raise UsageError(f"--{flag}={value} is unknown; use one of {', '.join(allowed)}")
