"""A griffe extension for the docs build: the package's docstrings are
Google style with a few reStructuredText habits, rendered here as Markdown.

* ``Example:`` opens the same section as ``Examples:`` (doctest lines
  become code blocks; griffe reads only the plural as that section).
* ``text::`` followed by an indented block (a reST literal block) becomes
  ``text:`` and a fenced Python block.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_LITERAL = re.compile(
    r"^(?P<head>[^\n]*?\S):(?P<colon>:)[ \t]*\n(?P<blank>[ \t]*\n)+"
    r"(?P<body>(?:(?P<indent>[ \t]+)\S[^\n]*\n?(?:[ \t]*\n)*)"
    r"(?:(?P=indent)[^\n]*\n?(?:[ \t]*\n)*)*)", re.MULTILINE)


def markdown(text: str) -> str:
  """The docstring ``text`` with reST literal blocks fenced and ``Example:``
  read as ``Examples:``."""
  def fence(match):
    head = match["head"]
    section = head.strip() in ("Example", "Examples")
    if section:            # the block is the section's content: indented
      indent = match["indent"]
    else:                  # a paragraph's own level
      indent = head[:len(head) - len(head.lstrip())]
    body = textwrap.indent(textwrap.dedent(match["body"]).rstrip("\n"),
                           indent)
    gap = "\n" if section else "\n\n"
    return f"{head}:{gap}{indent}```python\n{body}\n{indent}```\n\n"
  text = _LITERAL.sub(fence, text)
  return re.sub(r"^(\s*)Example:[ \t]*$", r"\1Examples:", text,
                flags=re.MULTILINE)


class RestHabits(griffe.Extension):
  """Applies ``markdown`` to every docstring griffe loads."""

  def on_object(self, *, obj, **kwargs) -> None:
    if obj.docstring is not None:
      obj.docstring.value = markdown(obj.docstring.value)
