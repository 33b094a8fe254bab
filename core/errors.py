"""The one error type of bad user input.

`UserError` carries a one-line message that names the bad value and the
accepted ones (a flag, a recipe field, a path, a file). train.py and
evaluate.py catch it, and only it, at their boundary (`core.cli`): the user
sees `error: <message>` on stderr and a non-zero exit, without a traceback
(`--debug` shows it). Anything else that escapes is a bug and keeps its
traceback.

It subclasses `ValueError`, so library callers that catch `ValueError`
(and the tests that expect it) see no change.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a flag, a config value, a path or a file.

    Args:
        message: one line naming the bad value and what is accepted.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
