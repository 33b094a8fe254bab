"""The boundary of train.py and evaluate.py: bad input becomes one line.

    if __name__ == "__main__":
        cli.run(main)

`run` parses the absl flags and calls `main`. A flag that does not parse,
a `--recipe.a.b=VALUE` override of the wrong type, and any `UserError`
raised by `main` print exactly one line, `error: <message>`, on stderr
and exit with status 2, without a traceback. `--debug` (or absl's
`--verbosity=1`) re-raises instead, so the traceback shows. Ctrl-C
outside training (which handles it itself) prints one line and exits 130.
Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn

from absl import app, flags, logging

from core.errors import UserError

DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the traceback of an input error instead of its "
    "one-line message.")
#: Exit status of a rejected input (as argparse uses).
USAGE_EXIT = 2
#: Exit status after Ctrl-C (128 + SIGINT).
INTERRUPT_EXIT = 130


def fail(message: str) -> NoReturn:
    """Prints `error: message` as one line on stderr and exits 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr,
          flush=True)
    sys.exit(USAGE_EXIT)


def _debug_requested(argv: list[str]) -> bool:
    if flags.FLAGS.is_parsed():
        return DEBUG.value or logging.get_verbosity() >= 1
    return any(a in ("--debug", "--debug=true", "--debug=True")
               or a.startswith("--verbosity=1") or a == "-v=1"
               for a in argv)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a bad flag as one line (absl prints two)."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, UserError) as e:
        if _debug_requested(argv):
            raise
        fail(_one_line(e))
    except (AttributeError, KeyError) as e:
        # ml_collections: `--recipe.a.b=v` naming a field the recipe lacks.
        if _debug_requested(argv):
            raise
        field = str(e.args[0] if e.args else e).split("\n")[0].strip("'\"")
        culprit = [a.split("=")[0] for a in argv if a.startswith("--")
                   and "." in a.split("=")[0]
                   and field in a.split("=")[0].split(".")[1:]]
        fail(f"{culprit[0] if culprit else 'a --recipe override'}: the "
             f"recipe has no field {field!r}; see the recipe's config "
             "(python -c 'import recipes; print(recipes.get_config(NAME))')")


def _one_line(error: Exception) -> str:
    """The message of `error` as one line; a config file's own traceback,
    which ml_collections pastes into its flag error, shrinks to its last
    line (the exception's message, without its class name)."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        head = text.split("Traceback (most recent call last)")[0]
        last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
        last = last.split(": ", 1)[-1] if last.split(":")[0].endswith(
            ("Error", "Exception")) else last
        text = f"{head.strip()} {last}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines) if lines else type(error).__name__


def run(main: Callable[[list[str]], Any],
        argv: list[str] | None = None) -> None:
    """`absl.app.run(main)` with the input-error boundary (module doc)."""
    argv = list(sys.argv if argv is None else argv)

    def guarded(args):
        try:
            return main(args)
        except UserError as e:
            if _debug_requested(args):
                raise
            fail(str(e))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            sys.exit(INTERRUPT_EXIT)

    app.run(guarded, argv=argv, flags_parser=_parse_flags)
