"""Reading bundle files and their YAML, in bounded time and memory whatever the input.

The only I/O of :mod:`stackha.model`.  Every limit below turns hostile or broken input into a
:class:`~stackha.model.problems.Problem` (exit code 2) instead of a hang, a crash or gigabytes of
memory:

=========================== ============ ========================================================
limit                       value        why
=========================== ============ ========================================================
:data:`MAX_FILE_BYTES`      4 MiB        a bundle file or an ``include-file://`` file; the
                                         largest real bundles are tens of KiB, and a 6,000-
                                         application bundle is 1 MiB (``bench/analyze_scale.py``)
:data:`MAX_DEPTH`           64 levels    nesting of mappings and sequences, aliases followed
                                         (a bundle needs about 6); libyaml stops at 1,000
:data:`MAX_NODES`           1,000,000    nodes of one document with every alias expanded — an
                                         alias bomb ("billion laughs") is refused before any
                                         code walks its value (Juju's YAML library refuses
                                         excessive aliasing too)
:data:`MAX_INT_DIGITS`      100 digits   an integer; a longer one is refused with a hint to quote
                                         it (Python cannot even print one over 4,300 digits)
=========================== ============ ========================================================

A path must be a regular file: a directory, a FIFO (which would block the read) or a device such
as ``/dev/zero`` (which never ends) is refused before reading.  The file is opened non-blocking and
checked with ``fstat`` on the open descriptor, so a path swapped after the check cannot slip in.

YAML is read with pyyaml's safe loader (on libyaml when pyyaml was built with it), with three
differences that follow Juju (whose Go YAML library decodes a bundle into plain values):
timestamps stay strings (``2024-01-01`` is not turned into a date, and an invalid date is not an
error), a key given twice in one mapping is recorded — the last value wins, as in Juju — so the
loader can warn naming both lines, and a value that a tag cannot convert (``!!int abc``) is a
problem naming its line.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stackha.errors import printable
from stackha.model.problems import Problem, excerpt

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_INT_DIGITS",
    "MAX_NODES",
    "Duplicate",
    "SourceError",
    "parse_yaml",
    "read_file",
]

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_INT_DIGITS = 100


class SourceError(Exception):
    """A file that cannot be read as a bundle: ``message`` says why, ``fix`` what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def read_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` bytes.

    Raises:
        SourceError: ``path`` is missing or unreadable, is not a regular file (directory, FIFO,
            device, socket), or is larger than ``limit`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise SourceError("it is a directory, not a file", "give the path of a YAML file") from None
        raise SourceError(f"cannot read the file: {exc.strerror or exc}",
                          "give the path of a readable YAML file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
            raise SourceError(f"it is {what}, not a regular file",
                              "give the path of a YAML file (save a stream to a file first)")
        if st.st_size > limit:
            raise SourceError(f"the file is {st.st_size} bytes, more than the {limit} bytes "
                              "stackha reads", "split it into a bundle and overlays, or give a "
                              "smaller file")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # grew while being read
            raise SourceError(f"the file is more than the {limit} bytes stackha reads",
                              "give a smaller file")
        return b"".join(chunks)
    except OSError as exc:
        raise SourceError(f"cannot read the file: {exc.strerror or exc}",
                          "give the path of a readable YAML file") from None
    finally:
        os.close(fd)


def decode(data: bytes) -> str:
    """UTF-8 text of a bundle file (a BOM is dropped).  Raises SourceError for invalid UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(f"byte {exc.object[exc.start]:#04x} at line {line} is not UTF-8",
                          "save the file as UTF-8") from None


# ----------------------------------------------------------------------------- YAML


@dataclass(frozen=True)
class Duplicate:
    """A mapping key given twice: the value at ``second`` replaced the one at ``first``.

    ``first`` and ``second`` are 1-based ``(line, column)``.
    """

    key: str
    first: tuple[int, int]
    second: tuple[int, int]


_SafeBase: type = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


class _Loader(_SafeBase):  # type: ignore[misc, valid-type]
    """pyyaml's safe loader recording duplicate keys; conversion errors become YAML errors."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Duplicate] = []

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError, IndexError) as exc:  # IndexError: "!!int " (empty)
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {excerpt(node.value) if isinstance(node, yaml.ScalarNode) else ''}"
                f" as {node.tag.rsplit(':', 1)[-1]}: {excerpt(str(exc), 80)}", node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue
            if first is not None:
                self.duplicates.append(Duplicate(excerpt(key) if not isinstance(key, str) else key,
                                                 _pos(first), _pos(key_node.start_mark)))
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp_as_str(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp_as_str)

_INT_TAG = "tag:yaml.org,2002:int"


def _check_node(root: yaml.Node) -> tuple[str, tuple[int, int], str] | None:
    """``(message, position, fix)`` when a composed document breaks a limit, else None.

    Walks the node graph once, iteratively (no recursion, whatever the depth), following aliases
    with memoisation: linear in the number of distinct nodes.
    """
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (depth, expanded size)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return node.value
        return [n for pair in node.value for n in pair]

    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            kids = children(node)
            depth = 1 + max((memo[id(k)][0] for k in kids), default=0)
            size = 1 + sum(memo[id(k)][1] for k in kids)
            if size > MAX_NODES:
                return (f"the document expands to more than {MAX_NODES:,} values through its "
                        "aliases (an alias bomb?)", _pos(node.start_mark),
                        "use each anchor for a small value, a few times")
            memo[nid] = (depth, size)
            continue
        if nid in memo:
            continue
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG:
                digits = sum(c.isdigit() for c in node.value)
                if digits > MAX_INT_DIGITS:
                    return (f"an integer of {digits} digits (more than {MAX_INT_DIGITS})",
                            _pos(node.start_mark), "quote it if it is meant as a string")
            memo[nid] = (1, 1)
            continue
        if nid in on_path:
            return ("an alias refers to a value that contains it (a recursive alias)",
                    _pos(node.start_mark), "remove the alias from inside its own anchor")
        if len(on_path) >= MAX_DEPTH:
            return (f"values are nested more than {MAX_DEPTH} levels deep", _pos(node.start_mark),
                    "flatten the structure (a bundle needs about 6 levels)")
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((k, False) for k in children(node) if id(k) not in memo)
    return None


def _where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}"
    position = getattr(exc, "position", None)  # ReaderError: an offset (in UTF-8 bytes for libyaml)
    if isinstance(position, int):
        data: str | bytes = text if _SafeBase is yaml.SafeLoader else text.encode("utf-8", "replace")
        nl = "\n" if isinstance(data, str) else b"\n"
        line = data.count(nl, 0, position) + 1  # type: ignore[arg-type]
        return f"line {line}, column {position - data.rfind(nl, 0, position)}"  # type: ignore[arg-type]
    return "(document)"


def parse_yaml(text: str, source: str) -> tuple[list[Any], list[Problem], list[Duplicate]]:
    """Parse every YAML document of ``text`` within the limits of this module.

    Returns ``(documents, problems, duplicates)``: the documents as plain Python values; the
    problems (malformed YAML, a limit broken: then no documents); the keys given twice (the last
    value is kept).  Never raises for any input text.
    """
    problems: list[Problem] = []

    def bad(where: str, message: str, fix: str) -> tuple[list[Any], list[Problem], list[Duplicate]]:
        problems.append(Problem(path=where, message=message, fix=fix, source=source))
        return [], problems, []

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return bad("(document)", f"the text is {size} bytes, more than the {MAX_FILE_BYTES} bytes "
                   "stackha reads", "split it into a bundle and overlays")
    loader = _Loader(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            broken = _check_node(node) if node is not None else None
            if broken is not None:
                message, (line, column), fix = broken
                return bad(f"line {line}, column {column}", message, fix)
            docs.append(loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError as exc:
        what = printable(str(getattr(exc, "problem", None) or str(exc).splitlines()[0]), 200, newlines=False)
        mark = getattr(exc, "problem_mark", None)
        if what == "found undefined alias" and mark is not None:  # libyaml's message lacks the name
            line = text.splitlines()[mark.line] if mark.line < text.count("\n") + 1 else ""
            name = re.match(r"\*([^\s,\[\]{}]+)", line[mark.column:])
            if name:
                what += f" {excerpt(name.group(1))} (anchors are not shared between files or documents)"
        if isinstance(exc, yaml.constructor.ConstructorError):
            return bad(_where(exc, text), what, "correct the value, or remove its tag (!!int, "
                       "!!float, …) or quote it to keep it a string")
        return bad(_where(exc, text), f"malformed YAML: {what}",
                   "correct the YAML syntax (indentation, quotes, ':' after keys)")
    except RecursionError:  # the pure-Python composer, without libyaml
        return bad("(document)", "values are nested too deeply to read",
                   f"flatten the structure (a bundle needs about 6 levels, at most {MAX_DEPTH})")
    finally:
        loader.dispose()
    return docs, problems, list(loader.duplicates)
