"""What README.md and docs/*.md show a reader to type or to expect (GitHub issue #21), read from the Markdown.

tests/test_docs.py runs or checks every item; this module only reads the text:

* :func:`code_blocks`: the fenced code blocks of a page (its language, its first line);
* :func:`shell_commands`: the commands of a shell block (``bash``, or an unlabelled block whose first line starts
  like a command): ``\\`` continuations joined, ``# comments`` split off (kept: they say what a command promises),
  ``&&`` chains split, ``$ `` prompts dropped;
* :func:`inline_commands`: single-backtick spans in the prose that start like a command (``spikeyolo-eval ...``,
  ``python scripts/X.py ...``, ``docker run ...``);
* :func:`error_quotes`: every ```error: ...``` quoted in the prose or the tables.

Pages: README.md and every docs/*.md (a glob, so a new page is covered without editing the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# how a line of an unlabelled block starts when the block is a command (else it is a diagram, a layout, a format)
COMMAND_START = re.compile(r"(\.venv/bin/)?(spikeyolo-[a-z]+|python3?|torchrun|docker|pip|mkdir|bash)\b"
                           r"|[A-Z][A-Z0-9_]*=\S+\s")
SHELL_LANGS = {"bash", "sh", "shell", "console"}


def doc_pages() -> list[Path]:
    """README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page_name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Placed:
    """Where on a page something was found."""

    page: str
    line: int          # 1-based: the opening fence of a block, the first line of a command

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Block(Placed):
    lang: str
    text: str


@dataclass(frozen=True)
class Command(Placed):
    text: str          # continuations joined, comment removed, whitespace as written inside the line
    comment: str       # the comment of its line(s), '' when none
    inline: bool = False


@dataclass(frozen=True)
class Quote(Placed):
    text: str          # the quoted message, whitespace normalised, without the backticks


FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a page (indented fences in list items too; the indent is removed)."""
    blocks, lines = [], path.read_text().splitlines()
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent = len(opening["indent"])
        body, end = [], number + 1
        while end < len(lines) and not re.match(r"^[ \t]*```[ \t]*$", lines[end]):
            line = lines[end]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            end += 1
        if end == len(lines):
            raise ValueError(f"{page_name(path)}:{number + 1}: a code fence that is never closed")
        blocks.append(Block(page_name(path), number + 1, opening["lang"].lower(), "\n".join(body)))
        number = end + 1
    return blocks


def is_shell(block: Block) -> bool:
    """A shell block: labelled as one, or unlabelled with a first line that starts like a command."""
    if block.lang in SHELL_LANGS:
        return True
    if block.lang:
        return False
    first = next((line.strip() for line in block.text.splitlines() if line.strip()), "")
    return bool(COMMAND_START.match(first.removeprefix("$ ")))


def _comment_start(line: str) -> int:
    """Index of a ``#`` that starts a shell comment (outside quotes, at the start or after a blank), or -1."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return index
    return -1


def _split_and(text: str) -> list[str]:
    """``a && b`` -> [a, b] (outside quotes)."""
    parts, quote, start = [], None, 0
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif text.startswith("&&", index):
            parts.append(text[start:index])
            start = index + 2
            index += 1
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block, in order."""
    commands: list[Command] = []
    pending, comments, first = "", [], 0
    for offset, raw in enumerate(block.text.splitlines(), start=1):
        line = raw.rstrip()
        cut = _comment_start(line)
        code, comment = (line[:cut], line[cut + 1:].strip()) if cut >= 0 else (line, "")
        if not pending:
            first = block.line + offset
            code = re.sub(r"^\s*\$ ", "", code)
        if comment:
            comments.append(comment)
        continued = code.rstrip().endswith("\\")
        pending += " " + code.rstrip().removesuffix("\\")
        if continued:
            continue
        if pending.strip():
            for part in _split_and(pending):
                commands.append(Command(block.page, first, " ".join(part.split()) if "'" not in part and '"' not in
                                        part else part.strip(), " ".join(comments)))
        pending, comments = "", []
    if pending.strip():
        raise ValueError(f"{block.where}: the block ends inside a '\\' continuation")
    return commands


def _prose(path: Path) -> str:
    """The page with its fenced blocks blanked (line numbers kept)."""
    text = path.read_text()
    return re.sub(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", lambda m: "\n" * m.group(0).count("\n"), text,
                  flags=re.S | re.M)


INLINE = re.compile(r"(?<!`)`((?:spikeyolo-[a-z]+|python3? (?:scripts/|-m |-c )|docker (?:build|run) )[^`]*)`(?!`)")


def inline_commands(path: Path) -> list[Command]:
    """Single-backtick spans of the prose that are a ``spikeyolo-*`` command or ``python scripts/...`` /
    ``python -m ...`` (a span may wrap onto the next line)."""
    text = _prose(path)
    return [Command(page_name(path), text.count("\n", 0, match.start()) + 1, " ".join(match[1].split()), "",
                    inline=True)
            for match in INLINE.finditer(text)]


def error_quotes(path: Path) -> list[Quote]:
    """Every ```error: ...``` span of the prose and tables (wrapped spans joined)."""
    text = _prose(path)
    return [Quote(page_name(path), text.count("\n", 0, match.start()) + 1, " ".join(match[1].split()))
            for match in re.finditer(r"`(error: [^`]+)`", text)]


def all_blocks() -> list[Block]:
    return [block for page in doc_pages() for block in code_blocks(page)]
