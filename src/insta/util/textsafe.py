"""Text from data files made safe to print on a terminal.

Task ids, instructions and examples come from files downloaded from the internet; printed raw, an ESC/OSC/CSI
sequence in them could retitle the window, clear the screen or hide text. :func:`safe_text` turns every control
character into its visible ``\\xNN`` form. Use it on everything from data that reaches a terminal; JSON outputs
keep the raw text.
"""
from __future__ import annotations

# C0 controls, DEL and C1 controls (ESC starts CSI/OSC; 0x9b and 0x9d are one-byte CSI and OSC), plus the
# Unicode bidirectional overrides and isolates that reorder what a terminal shows
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPED = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_KEEP_LAYOUT = {ord("\n"): "\n", ord("\t"): "\t"}
_MULTILINE = str.maketrans({**_ESCAPED, **_KEEP_LAYOUT})
_ONE_LINE = str.maketrans({**_ESCAPED, ord("\t"): "\t"})


def safe_text(text: object, *, newlines: bool = True) -> str:
    """``str(text)`` with control characters shown as ``\\x1b``-style escapes.

    Tabs are kept; newlines are kept when ``newlines`` is true (multi-line text such as an example's input),
    escaped otherwise (a table cell, a one-line message). Carriage returns are always escaped.
    """
    return str(text).translate(_MULTILINE if newlines else _ONE_LINE)


def safe_markup(text: object, *, newlines: bool = True) -> str:
    """:func:`safe_text`, then escaped for rich markup (``[`` is literal): for ``Console.print`` and tables."""
    from rich.markup import escape

    return escape(safe_text(text, newlines=newlines))
