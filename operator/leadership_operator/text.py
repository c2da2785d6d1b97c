"""Text the operator, the sidecar and the command show, cut to size: the one cutter, and
every limit it is used with, named once.

What reaches a message may come from the cluster (a hostile holderIdentity of 400 KB, a pod
name with terminal escapes) or from an error (an API server's body): nothing is shown whole
unless it is short, and a cut says how much it dropped where there is room to.
"""

from __future__ import annotations

import leadership

#: An Event's message (core/v1 Events without eventTime have no length limit of their own).
EVENT = 1024
#: One line the command prints for an error (a 403's advice gets `2 * LINE`).
LINE = 600
#: An error quoted inside a log line or an Event's message.
DETAIL = 300
#: A cell of `leadership status`'s table.
CELL = 80
#: A value from the cluster quoted in a message because it is malformed (a holderIdentity).
QUOTE = 64

#: Below this limit a cut ends in "…" alone; from it on, in how many characters it dropped.
_COUNTED = 200


def cut(text: str, limit: int, *, one_line: bool = False, escape: bool = False) -> str:
    """`text` in at most `limit` characters.

    `one_line` folds every run of whitespace (newlines too) into one space; `escape` writes
    control characters as Python escapes (a Lease may hold terminal escape sequences)."""
    if one_line:
        text = " ".join(text.split())
    if escape:
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                       for c in text)
    if len(text) <= limit:
        return text
    if limit < _COUNTED:
        return text[:limit - 1] + "…"
    marker = ""
    for _ in range(3):  # the count's own digits change how much room is left: settle it
        marker = f"… ({len(text) - (limit - len(marker))} more characters)"
    return text[:limit - len(marker)] + marker


def error(exc: BaseException, limit: int = DETAIL) -> str:
    """An exception as a log line or an Event shows it: type and text on one line, never its
    repr (see `leadership.describe_error`), at most `limit` characters."""
    return cut(leadership.describe_error(exc), limit, one_line=True)
