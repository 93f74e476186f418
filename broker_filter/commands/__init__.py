"""One module per ``broker-filter`` subcommand; see :mod:`broker_filter.cli`."""

from __future__ import annotations

import argparse
import importlib.util
import re

from broker_filter.logging_setup import fatal

PROVING = "broker_filter_proving"
#: reStructuredText markup of the docstrings the commands' descriptions come from
_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(text: str) -> str:
    """A docstring as a person reads it at the terminal: ``literal`` and :role:`target` unmarked."""
    return _LITERAL.sub(r"\1", _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text))


class HelpFormatter(argparse.HelpFormatter):
    """Plain text (no reST markup), and each option's default where it has a meaningful one."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = [" ".join(part.split()) for part in plain(text).split("\n\n")]
        return "\n\n".join(super(HelpFormatter, self)._fill_text(part, width, indent) for part in paragraphs if part)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain(action.help or "")
        default = action.default
        if "default" not in text and default not in (None, False, [], (), argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


class CommandParser(argparse.ArgumentParser):
    """Every subcommand's parser: :class:`HelpFormatter` unless the command picks its own."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def proving_installed() -> bool:
    """Whether the benchmarks, failure scenarios and local Kafka (``proving/``) are installed.

    A runtime install (the image, ``pip install broker-filter``) leaves them out; the commands
    that need them then say so in one line instead of failing on an import.
    """
    return importlib.util.find_spec(PROVING) is not None


def register_without_proving(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """The parser of a command whose code lives in ``proving/`` when that package is absent."""
    parser = subparsers.add_parser(name, help=f"{help_text} (needs broker-filter-proving)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=lambda args: _proving_missing(name))


def _proving_missing(name: str) -> int:
    return fatal(f"broker-filter {name}: needs the broker-filter-proving package, which a runtime install leaves out; "
                 "from a clone of the repository: pip install -e ./proving")
