"""Class names read from files (a ``model.pth``, an ONNX export's metadata), made safe to print and to write.

Names come from files that anyone may have written. Printed raw, an escape sequence (``"\\x1b[2J"``) clears
the user's terminal and a newline forges a result line; written into Triton's ``labels.txt`` (one name per
line), a newline splits a name in two; a lone surrogate (a non-UTF-8 folder name, as Python decodes it)
cannot be written as UTF-8 at all. :func:`load_class_names` is the one place where stored names enter the
repository: every character that is not printable text is replaced by its Python escape (``\\n``,
``\\x1b``, ``\\u202e``, ``\\udcff``), so a name always prints on one line, as what it holds, and encodes as
UTF-8. A list that does not fit the model (another length, entries that are not strings) is not used, and a
warning says why.
"""

from __future__ import annotations

import unicodedata
import warnings
from typing import Any, Optional, Sequence

__all__ = ["check_label_names", "load_class_names", "printable_name", "unprintable_characters"]

# Unicode categories that are not text to show: control characters (C0, C1: escape, newline, NEL), format
# characters (bidirectional overrides, which reorder what a terminal shows), surrogates (undecodable bytes),
# private-use characters, and the line and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Format characters that written languages need: zero-width non-joiner and joiner (Persian, Indic scripts, emoji).
_KEPT = frozenset({"\u200c", "\u200d"})


def _escaped(char: str) -> bool:
    return char not in _KEPT and unicodedata.category(char) in _ESCAPED_CATEGORIES


def unprintable_characters(name: str) -> list[str]:
    """The characters of ``name`` that :func:`printable_name` escapes, in order (empty for printable text)."""
    return [char for char in name if _escaped(char)]


def printable_name(name: str) -> str:
    """``name`` with each character that is not printable text replaced by its Python escape.

    Printable names (every language's letters, punctuation, spaces, emoji) are returned unchanged; a newline
    becomes the two characters ``\\n``, an escape ``\\x1b``, a right-to-left override ``\\u202e``, a lone
    surrogate ``\\udcff``. The result holds no line break and always encodes as UTF-8.
    """
    if not any(_escaped(char) for char in name):
        return name
    return "".join(char.encode("unicode_escape", "backslashreplace").decode("ascii") if _escaped(char) else char
                   for char in name)


def load_class_names(stored: Any, num_classes: Optional[int], source: str) -> Optional[list[str]]:
    """The class names ``stored`` in a file (``source`` names it), made printable, or ``None``.

    ``stored`` is used when it is a list (or tuple) of ``num_classes`` strings (any length when
    ``num_classes`` is ``None``). A name holding characters that are not printable text is escaped
    (:func:`printable_name`) with a warning naming its class. Anything else that is not ``None`` (another
    number of names than of outputs, entries that are not strings, not a list) is left out with a warning
    saying so, and ``None`` is returned: the caller names the classes otherwise (ImageNet's, or by number).
    """
    if stored is None:
        return None
    problem = None
    if not isinstance(stored, (list, tuple)):
        problem = f"a {type(stored).__name__}, not a list of names"
    else:
        others = [(i, type(name).__name__) for i, name in enumerate(stored) if not isinstance(name, str)]
        if others:
            index, kind = others[0]
            problem = (f"{len(others):,} entries that are not strings (the first: entry {index}, of type {kind})")
        elif num_classes is not None and len(stored) != num_classes:
            problem = f"{len(stored):,} names for the model's {num_classes:,} outputs"
    if problem is not None:
        warnings.warn(f"{source}: the stored class names are not used: {problem}; the classes are named "
                      "otherwise (ImageNet's names for 1000 outputs, else by number)", UserWarning, stacklevel=3)
        return None
    names = [printable_name(name) for name in stored]
    changed = [i for i, (old, new) in enumerate(zip(stored, names)) if old != new]
    if changed:
        shown = ", ".join(f"{i} ({names[i]})" for i in changed[:3])
        more = f" and {len(changed) - 3:,} more" if len(changed) > 3 else ""
        warnings.warn(f"{source}: class name(s) {shown}{more} hold characters that are not printable text "
                      "(control characters, line breaks, bidirectional overrides or undecodable bytes); they are "
                      "shown escaped, as written here", UserWarning, stacklevel=3)
    return names


def check_label_names(names: Sequence[str]) -> Optional[str]:
    """Why ``names`` cannot be written one per line into a label file that a server reads back as the same
    names (a name holding a line break or another unprintable character, or one that is not UTF-8 text),
    or ``None`` when they can."""
    for index, name in enumerate(names):
        if not isinstance(name, str):
            return f"class {index} is a {type(name).__name__}, not a string"
        if unprintable_characters(name):
            return (f"class {index} ({printable_name(name)!r}) holds a line break or another character that is not "
                    "printable text")
    return None
