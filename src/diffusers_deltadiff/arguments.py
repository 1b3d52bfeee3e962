"""Command-line value parsers shared by `deltadiff`, the training scripts and the benchmarks (argparse `type`s)."""

import argparse
import math
import os
import shlex
import sys
from pathlib import Path


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


def float_at_least(minimum: float, maximum: float | None = None):
    """An argparse `type`: a finite number in `[minimum, maximum]`, the message naming the range."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from err
        if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
            expected = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"of at least {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {expected}, got {text}")
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


def sha256_hex(text: str) -> str:
    """An argparse `type`: a SHA-256 as 64 hexadecimal digits (either case, surrounding spaces ignored), lower-cased."""
    value = text.strip().lower()
    if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise argparse.ArgumentTypeError(f"expected a SHA-256 (64 hexadecimal digits), got {text!r}")
    return value


def without_comment(line: str) -> str:
    """`line` up to a `#` that starts a word outside quotes, where a shell's comment starts (`out#2` is one word)."""
    quote, escaped, word_start = None, False, True
    for index, ch in enumerate(line):
        if escaped:
            escaped, word_start = False, False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote, word_start = ch, False
        elif ch.isspace():
            word_start = True
        elif ch == "#" and word_start:
            return line[:index]
        else:
            word_start = False
    return line


class RecipeArgumentParser(argparse.ArgumentParser):
    """
    An `ArgumentParser` that also reads arguments from recipe files, `@path` on the command line: one or more
    arguments per line, shell-quoted, `#` starting a comment as in a shell; UTF-8 (a byte-order mark and CRLF line
    ends are fine); a recipe may name another with `@path` (paths relative to the working folder, as every path in a
    recipe). Later arguments override earlier ones, so `@recipe.args --max_train_steps 2` runs a recipe with one flag
    changed. A recipe that cannot be read, is not UTF-8, has an unclosed quote or includes itself is a flag error
    naming the file (and line); so is an unrecognized flag read from a recipe.
    """

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        self.origins = {}  # an argument read from a recipe -> where it was first read
        return super().parse_known_args(self.expand_recipes(args, ()), namespace)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            located = [f"{arg}: {self.origins[arg]}" for arg in extras if arg.startswith("-") and arg in self.origins]
            where = f" ({'; '.join(located)})" if located else ""
            self.error(f"unrecognized arguments: {' '.join(extras)}{where}")
        return namespace

    def expand_recipes(self, args: list[str], including: tuple[str, ...]) -> list[str]:
        """`args` with every `@path` replaced by that recipe's arguments; `including` are the recipes being read."""
        expanded = []
        for arg in args:
            expanded += self.read_recipe(arg[1:], including) if arg.startswith("@") else [arg]
        return expanded

    def read_recipe(self, path: str, including: tuple[str, ...]) -> list[str]:
        resolved = os.path.realpath(path)
        if resolved in including:
            self.error(f"@{path}: the recipe includes itself")
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except OSError as err:
            self.error(f"@{path}: cannot read the recipe ({err.strerror or err})")
        except UnicodeDecodeError as err:
            self.error(f"@{path}: the recipe is not UTF-8 text (byte {err.start})")
        args = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                words = shlex.split(without_comment(line))
            except ValueError as err:
                self.error(f"@{path}, line {number}: {err}")
            for word in words:
                self.origins.setdefault(word, f"@{path}, line {number}")
            args += words
        return self.expand_recipes(args, (*including, resolved))
