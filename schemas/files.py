"""Reading the small text files a user points Chainwatch at: plans, mappings, tokens.

Every one of them is YAML, read through `load_config_yaml`: a key given twice in
one mapping is refused (YAML's loaders keep the last one silently: a plan's
`handoff: 12h` undone by a later `handoff: 1s`, a tokens file's list by a later
empty one), and nesting too deep for the parser is an error like any other bad
YAML, said on one line, not a `RecursionError`. So are aliases that would expand a
few hundred bytes into millions of values ("billion laughs") or hold themselves:
everything that walks a value (pydantic, an error's repr) walked every copy.

`Path.read_text` reads whatever the path names: a FIFO blocked the command for
ever, `/dev/zero` grew it to gigabytes before anything could say the file was
wrong. These files are a few kilobytes; anything that is not a regular file, or
is larger than `MAX_CONFIG_BYTES`, is an `OSError` whose `strerror` says why, so
the callers' existing "cannot read ..." errors report it in one line.

Files a command writes for others to read (the tokens file, exported dashboards) go
through `write_text_atomically`, for the same kinds of path.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from schemas.text import shorten

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Far above any plan, mapping or tokens file (the shipped ones are a few KB)."""


def read_config_bytes(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The file's bytes; `OSError` for a missing, special or oversized file."""
    found = os.stat(path)
    if not stat.S_ISREG(found.st_mode):
        raise OSError(errno.EINVAL, "not a regular file (a directory, pipe or device)", str(path))
    # O_NONBLOCK: should the path be swapped for a FIFO after the check, open never waits
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes:,} bytes", str(path))
    return data


def not_a_file(path: Path) -> str | None:
    """Why `path` is no file a command can read rows from (None: it is one).

    "no such file" was said of a directory and of a FIFO too, which sent the user
    looking for a typo; a FIFO opened for reading would also wait for a writer.
    """
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if stat.S_ISDIR(found.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(found.st_mode):
        return "is not a regular file (a pipe, socket or device)"
    return None


def read_config_text(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """`read_config_bytes` as UTF-8 text (`UnicodeDecodeError` when it is not)."""
    return read_config_bytes(path, max_bytes).decode("utf-8")


def write_text_atomically(
    path: Path, text: str, *, new_mode: int | None = None, in_place_fallback: bool = False
) -> None:
    """Put `text` at `path` whole or not at all: written beside it, then renamed over it.

    A reader (Grafana's provisioning, the gateway reloading its tokens) never sees half a
    file, and a crash or a full disk leaves the old one: the new one is synced to the disk
    before the rename (and the directory after it, where the platform allows).

    The rename replaces what `path` names, never writes through it: `Path.write_text`
    blocked for ever on a FIFO there and wrote through a symbolic link to wherever it
    pointed.

    The file keeps the mode of the regular file it replaces (only a regular file's: a FIFO's
    or a link target's mode is not the file's). A new one gets `new_mode` exactly (the
    tokens file's 0600), or with None what the umask leaves of 0666, as `Path.write_text`
    gave (mkstemp's 0600, or a fixed 0644, ignored the user's umask both ways).

    The file beside needs write permission on the directory, where `Path.write_text` needed
    it on the file only. With `in_place_fallback`, a directory that refuses it (EACCES,
    EPERM) while `path` is a regular file that can be written gets the text written into
    that file (`_write_in_place`: never a FIFO, never through a link), which is then not
    atomic: for files that are rebuilt on the next run (exported dashboards), not for one
    whose loss locks users out (the tokens file). Otherwise, and when that fails too, the
    `PermissionError`'s `strerror` names the directory that cannot be written.
    `OSError` (with `strerror`) when it cannot be."""
    old_mode = _regular_file_mode(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = create_beside(path, 0o666 if new_mode is None else new_mode)
    except PermissionError as exc:
        if in_place_fallback and old_mode is not None:
            try:
                _write_in_place(path, text)
            except OSError:
                pass  # the directory's refusal is the cause to report
            else:
                return
        why = f"cannot create a file in the directory {str(path.parent)!r} ({exc.strerror})"
        raise PermissionError(exc.errno, why, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            mode = new_mode if old_mode is None else old_mode
            if mode is not None:  # before any byte is written: the secret is never wider
                os.fchmod(handle.fileno(), mode)
            handle.write(text)
            flush_to_disk(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def flush_to_disk(handle: IO[Any]) -> None:
    """The text on the disk before the rename: without it a crash soon after may keep the
    rename and lose the data (an empty file where the old one was)."""
    handle.flush()
    os.fsync(handle.fileno())


def sync_directory(directory: Path) -> None:
    """The rename itself on the disk; best effort: not every file system or platform lets
    a directory be opened or synced, and the file is in place either way."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _regular_file_mode(path: Path) -> int | None:
    """The permission bits of the regular file at `path` itself (`lstat`), else None."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return None
    return stat.S_IMODE(found.st_mode) if stat.S_ISREG(found.st_mode) else None


def _write_in_place(path: Path, text: str) -> None:
    """Truncate and write the regular file at `path` itself: `O_NOFOLLOW` refuses a link,
    `O_NONBLOCK` a FIFO without a reader (`ENXIO`, never a wait), and one swapped in since
    the `lstat` (or a device) is refused by `fstat` before a byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe or device)", str(path))
        handle.write(text)
        flush_to_disk(handle)


_TEMP_NAME_TRIES = 100
"""As `tempfile`'s TMP_MAX: a random name taken that often means something else is wrong."""


def create_beside(path: Path, mode: int) -> tuple[int, Path]:
    """A new, empty file in `path`'s directory, created `mode` less the umask (mkstemp's
    fixed 0600 would leave the umask no say); its descriptor, open for writing, and path."""
    for _ in range(_TEMP_NAME_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


class ConfigYamlError(yaml.YAMLError):
    """A config file that is not YAML a command can use; its text is one line.

    `private` says what is wrong without a word of the file (the tokens file's
    loaders: a token pasted there by mistake must not reach a log)."""

    def __init__(self, text: str, private: str) -> None:
        super().__init__(text)
        self.private = private


class _AliasError(ComposerError):
    """Aliases that expand too far or hold themselves (`_check_aliases`): its words are
    ours, none of the file's, so the private text says them too."""


class _KeyTwice(ConstructorError):
    """A mapping that gives one key twice (`StrictSafeLoader`); `key` as written."""

    key: str = ""


# libyaml's parser when PyYAML has it (its wheels do): ~6x faster than the pure-Python
# one, which took 9 s for a tokens file near `MAX_CONFIG_BYTES`.
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MAX_ALIASED_NODES = 100_000
"""The nodes aliases may add to a document as written (a merge key's `<<: *defaults`
adds its mapping's): far above any file's reuse of its anchors."""


_KEY_SHOWN = 80
"""The characters of a key an error quotes: a key may be as long as the file."""


class StrictSafeLoader(_SafeLoader):
    """A safe loader that refuses a key given twice in one mapping.

    Keys are compared as the dict will hold them, not as written: `1` and `true`
    (True == 1 in Python), `1`, `1.0` and `0x1`, `10` and `1_0`, `~` and `null` are one key
    each, and one value would overwrite the other unseen. Merge keys (`<<: *defaults`)
    still override as YAML says: only keys written in the mapping itself are compared.

    Aliases are bounded (`get_single_data`). Plain scalars YAML 1.1 reads as octal or
    base-60 numbers (`010`, `1:30`) are the text written, as in YAML 1.2: `concurrency:
    010` was 8, an import's value map's `010:` matched the cell `8`. `!!set`, `!!omap`,
    `!!pairs` and `!!binary` are refused: no file of ours takes them, and a set (an
    unordered list to pydantic) made a route's order the hash seed's.
    """

    def get_single_data(self) -> Any:
        """The document, once its aliases are known to add at most `MAX_ALIASED_NODES`
        nodes and none contains itself: the constructor shares an alias's value, but
        anything that walks it (pydantic, a repr in an error, json.dumps) expanded nine
        nested anchors of nine aliases each ("billion laughs", a few hundred bytes) into
        9^9 values, for minutes and gigabytes; a value holding itself walked for ever."""
        node = self.get_single_node()
        if node is None:
            return None
        _check_aliases(node)
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, str] = {}
        # an explicit `!!map` on a scalar comes here too: the base class refuses it
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node, deep)  # kept: the base class reuses it
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the base class refuses it in its own words
                continue
            if first is not None:
                written = shorten(key_node.value, _KEY_SHOWN)
                same = (
                    ""
                    if first == key_node.value
                    else f" (as {shorten(first, _KEY_SHOWN)!r} before it)"
                )
                twice = _KeyTwice(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {written!r} twice{same}",
                    key_node.start_mark,
                )
                twice.key = key_node.value
                raise twice
            seen[key] = key_node.value
        return super().construct_mapping(node, deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar its explicit tag cannot read (`!!int abc`, `!!timestamp x`) is a
        `ConstructorError` like any bad YAML: PyYAML let int()'s `ValueError` (or an
        `AttributeError`) through, past every caller's "not valid YAML" handling."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError):
            if not isinstance(node, yaml.ScalarNode):
                raise
            text = shorten(node.value, 40)
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise ConstructorError(
                None, None, f"{text!r} cannot be read as {tag}", node.start_mark
            ) from None


def _refused_type(loader: StrictSafeLoader, node: yaml.Node) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise ConstructorError(None, None, f"a {tag} value is not taken in this file", node.start_mark)


for _name in ("set", "omap", "pairs", "binary"):
    StrictSafeLoader.add_constructor(f"tag:yaml.org,2002:{_name}", _refused_type)


def _yaml_1_2_numbers(tag: str, pattern: re.Pattern[str]) -> re.Pattern[str]:
    """`pattern` without the alternatives of YAML 1.1's octal and base-60 numbers."""
    if tag == "tag:yaml.org,2002:int":
        return re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
    if tag == "tag:yaml.org,2002:float":
        return re.compile(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
            r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        )
    return pattern


StrictSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, _yaml_1_2_numbers(tag, pattern)) for tag, pattern in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_aliases(root: yaml.Node) -> None:
    """`_AliasError` when the document's aliases add more than `MAX_ALIASED_NODES`
    nodes, or one is inside the node it names (`&a [*a]`). Each collection is counted
    once with what it holds (iteratively: a deep file must not exhaust the stack here);
    a scalar is one node wherever it stands, an alias of one written in the file."""
    written = 0  # the nodes the file writes: each collection and its entries, once
    sizes: dict[int, int] = {}  # id(collection) -> nodes in it, aliases expanded
    entered: set[int] = set()  # on the path from the root
    # a node to enter, or (node, its collections) once they are counted: few tuples, as
    # each one made the garbage collector walk the file's many nodes again
    todo: list[yaml.Node | tuple[yaml.Node, list[yaml.Node]]] = [root]
    while todo:
        item = todo.pop()
        if isinstance(item, tuple):
            node, inner = item
            key = id(node)
            entered.discard(key)
            scalars = _entries(node) - len(inner)
            sizes[key] = size = 1 + scalars + sum(sizes[id(child)] for child in inner)
            # sound before the end: what is not counted yet only adds to the excess
            if size - written > MAX_ALIASED_NODES:
                raise _AliasError(
                    None,
                    None,
                    f"aliases (*name) add more than {MAX_ALIASED_NODES:,} values to those written",
                    node.start_mark,
                )
            continue
        key = id(item)
        if key in entered:
            raise _AliasError(
                None,
                None,
                "an alias inside the node it names (a value holding itself)",
                item.start_mark,
            )
        if key not in sizes:
            inner = _collections_in(item)
            written += 1 + _entries(item)
            if not inner:  # scalars only: as written
                sizes[key] = 1 + _entries(item)
                continue
            entered.add(key)
            todo.append((item, inner))
            todo.extend(inner)


def _entries(node: yaml.Node) -> int:
    return len(node.value) * (2 if isinstance(node, yaml.MappingNode) else 1)


def _collections_in(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return [child for child in node.value if not isinstance(child, yaml.ScalarNode)]
    if isinstance(node, yaml.MappingNode):
        return [
            part for pair in node.value for part in pair if not isinstance(part, yaml.ScalarNode)
        ]
    return []


def load_config_yaml(
    text: str,
    loader: type[StrictSafeLoader] = StrictSafeLoader,
    *,
    known_keys: Collection[str] = (),
) -> Any:
    """The YAML document in `text`; `ConfigYamlError` (one line) when it cannot be loaded.

    Its `private` text names a key written twice when the key is one of `known_keys` (the
    file's own field names: no text of the user's, as a token pasted as a key would be).
    """
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigYamlError("nested too deeply to read", "nested too deeply to read") from None
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own limit
            deep = f"nested too deeply to read{_where(exc)}"
            raise ConfigYamlError(deep, deep) from None
        where = _where(exc)
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
            text = " ".join(f"{exc.problem}{where}".split())
        else:
            text = " ".join(str(exc).split())
        if isinstance(exc, _AliasError):
            private = str(exc.problem)
        elif not isinstance(exc, _KeyTwice):
            private = "not valid YAML"
        elif exc.key in known_keys:
            private = f"the key {exc.key!r} written twice"
        else:
            private = "a key written twice"
        raise ConfigYamlError(text, private + where) from None


def entry_lines(text: str, key: str) -> list[int]:
    """The line (from 1) of each entry of the list under the document's top-level `key`,
    for an error that names entries by their index; [] when the text holds no such list.
    Parsed, not composed: an entry written as an alias (`- *e`) is placed where it is
    written, not at its anchor, and nothing is constructed; only an error path pays."""
    try:
        events = yaml.parse(text, Loader=StrictSafeLoader)
        while not isinstance(event := next(events), yaml.NodeEvent | yaml.StreamEndEvent):
            pass  # the stream's and the document's start
        if not isinstance(event, yaml.MappingStartEvent):
            return []
        while not isinstance(event := next(events), yaml.MappingEndEvent):  # a key
            named = isinstance(event, yaml.ScalarEvent) and event.value == key
            _skip(event, events)
            value = next(events)
            if named:
                return _item_lines(events) if isinstance(value, yaml.SequenceStartEvent) else []
            _skip(value, events)
    except (yaml.YAMLError, RecursionError, StopIteration):
        pass
    return []


def _item_lines(events: Iterator[yaml.Event]) -> list[int]:
    """The line of each entry of the sequence just started, read past its end."""
    lines = []
    while not isinstance(event := next(events), yaml.SequenceEndEvent):
        if event.start_mark is None:  # a parser's events carry one: no lines, never wrong ones
            return []
        lines.append(event.start_mark.line + 1)
        _skip(event, events)
    return lines


def _skip(event: yaml.Event, events: Iterator[yaml.Event]) -> None:
    """Past the node `event` starts (a scalar or an alias is one event)."""
    depth = int(isinstance(event, yaml.CollectionStartEvent))
    while depth:
        event = next(events)
        depth += isinstance(event, yaml.CollectionStartEvent)
        depth -= isinstance(event, yaml.CollectionEndEvent)


def _where(exc: yaml.YAMLError) -> str:
    """` (line 2, column 1)`: where PyYAML found the problem, without its excerpt of the file."""
    mark = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
