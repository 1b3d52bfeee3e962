"""Command-line value parsers shared by `deltadiff`, the training scripts and the benchmarks (argparse `type`s)."""

import argparse
import math


def int_at_least(minimum: int, maximum: int | None = None):
    """An argparse `type`: an integer in `[minimum, maximum]`, the message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from err
        if value < minimum or (maximum is not None and value > maximum):
            expected = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value

    return parse


def float_at_least(minimum: float):
    """An argparse `type`: a finite number of at least `minimum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from err
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number of at least {minimum:g}, got {text}")
        return value

    return parse


def unit_interval(text: str) -> float:
    """An argparse `type`: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from err
    if not 0 <= value <= 1:  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text}")
    return value


def float_list(text: str) -> list[float]:
    """An argparse `type`: comma-separated numbers, at least one."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def int_list(text: str, minimum: int = 1, allow_empty: bool = False) -> list[int]:
    """Comma-separated integers of at least `minimum` (`"1.5"` is an error, not 1); `""` only with `allow_empty`."""
    parse = int_at_least(minimum)
    values = [parse(v.strip()) for v in text.split(",") if v.strip()]
    if not values and not allow_empty:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


class RecipeArgumentParser(argparse.ArgumentParser):
    """
    An `ArgumentParser` that also reads arguments from recipe files, `@path` on the command line: one or more
    arguments per line, shell-quoted, `#` starting a comment. Later arguments override earlier ones, so
    `@recipe.args --max_train_steps 2` runs a recipe with one flag changed.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("fromfile_prefix_chars", "@")
        super().__init__(*args, **kwargs)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        import shlex

        return shlex.split(arg_line, comments=True)
