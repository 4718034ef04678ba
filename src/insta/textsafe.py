"""Text from data files shown on a terminal: control characters (ESC/OSC/CSI sequences) made visible."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with every C0/C1 control character (except tab, and newline when asked) escaped as ``\\xNN``,
    so a task id or instruction cannot move the cursor, retitle the terminal or hide output."""
    s = str(text)
    if not keep_newlines:
        s = s.replace("\n", "\\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)
