"""Loading user YAML (specs, scenario files, EPP configs) with bounded size and alias expansion.

Contract: `load_yaml_file(path, what)` returns the document or raises a one-line `UserError` naming
the file. It refuses, before building any Python object:
- a file larger than MAX_SPEC_BYTES, or one that is not UTF-8 text (or holds a NUL byte);
- a document whose node graph, with every alias expanded, has more than MAX_YAML_NODES nodes
  (a "billion laughs" alias bomb is a few hundred bytes that expand to billions of nodes: PyYAML
  itself shares the aliased objects, but anything that walks the result, pydantic included,
  expands them); and a recursive alias (a node that contains itself).
The expanded size is computed on the composed node graph with memoisation, so checking a bomb costs
time proportional to its text, not to its expansion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kvbench.errors import UserError
from kvbench.spec.bounds import MAX_SPEC_BYTES, MAX_YAML_NODES


def read_text_file(path: Path, what: str, max_bytes: int = MAX_SPEC_BYTES) -> str:
    """The file's text, or a one-line UserError (`what` names the field or flag that named it)."""
    where = f"{what}: {path}" if what else str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{where}: {size} bytes; a spec file is at most {max_bytes} bytes")
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{where}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None
    if "\x00" in text:
        raise UserError(f"{where}: holds a NUL byte (at offset {text.index(chr(0))})")
    return text


def load_yaml_text(text: str, source: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Parse one YAML document; aliases are expanded only if the expansion stays within max_nodes."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters: may raise a ReaderError
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, max_nodes, {}, set())
        if expanded > max_nodes:
            raise UserError(
                f"{source}: the YAML expands to more than {max_nodes} nodes through its aliases "
                f"(&anchor / *alias); write the values out"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or getattr(err, "reason", None)
        problem = problem or str(err).splitlines()[0]
        raise UserError(f"{source}: invalid YAML{where}: {problem}") from None
    except _RecursiveAlias as err:
        raise UserError(
            f"{source}: a recursive YAML alias (a node that contains itself) at line {err.args[0]}"
        ) from None
    except RecursionError:
        raise UserError(f"{source}: the YAML nests too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: Path, what: str) -> Any:
    return load_yaml_text(read_text_file(path, what), f"{what}: {path}" if what else str(path))


class _RecursiveAlias(Exception):
    """A node reachable from itself; args[0] is its 1-based line."""


def _expanded_size(
    node: yaml.Node, budget: int, sizes: dict[int, int], in_progress: set[int]
) -> int:
    """Nodes under `node` with aliases expanded, counted up to just past `budget`."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in in_progress:
        raise _RecursiveAlias(node.start_mark.line + 1)
    in_progress.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, budget, sizes, in_progress)
        if total > budget:
            break
    in_progress.discard(key)
    sizes[key] = total
    return total
