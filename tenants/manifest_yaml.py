"""Read a manifest's YAML text into plain data, with the checks that need the YAML nodes.

`read_yaml` rejects a key written twice in one mapping, because plain YAML keeps the last
value and drops the first without a word. It also records the text written for each scalar
that YAML read as a number, a boolean or null, so that a message about a field that expects
text can show `012` where YAML read the number 10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

# A location of a value in the document, as pydantic reports it: keys and list indexes.
Location = tuple[str | int, ...]

_NON_TEXT_TAGS = {
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
}


class _ManifestLoader(yaml.SafeLoader):
    """A YAML loader that keeps dates, times and `12:30`-style numbers as written.

    YAML 1.1 reads an unquoted `2026-12-25` as a date, `2026-12-25 10:00` as a timestamp and
    `12:30` as the base-60 number 750, and an impossible date such as `2026-08-32` makes the
    loader itself fail. Keeping the text lets validation name the field and the value.
    """


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _number_or_text(
    construct: Callable[[yaml.SafeLoader, yaml.ScalarNode], Any],
) -> Callable[[yaml.SafeLoader, yaml.ScalarNode], Any]:
    def construct_scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        if ":" in node.value:
            return node.value
        return construct(loader, node)

    return construct_scalar


_ManifestLoader.add_constructor(
    "tag:yaml.org,2002:int", _number_or_text(yaml.SafeLoader.construct_yaml_int)
)
_ManifestLoader.add_constructor(
    "tag:yaml.org,2002:float", _number_or_text(yaml.SafeLoader.construct_yaml_float)
)


@dataclass
class YamlDocument:
    """A manifest read from YAML: its data, the problems found in its nodes, and the text
    written for each scalar that YAML did not read as text."""

    data: Any
    problems: list[str] = field(default_factory=list)
    # Location to (text written, what YAML read it as), such as ("012", "a number").
    non_text_scalars: dict[Location, tuple[str, str]] = field(default_factory=dict)


def read_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raise `yaml.YAMLError` for a syntax error."""
    loader = _ManifestLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None)
        document = YamlDocument(None)
        _walk(node, (), document, set())
        document.data = loader.construct_document(node)
        return document
    finally:
        loader.dispose()


def path_text(location: Location) -> str:
    """Return a location as a field path such as `services[3].names`."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _walk(
    node: yaml.Node, location: Location, document: YamlDocument, open_nodes: set[int]
) -> None:
    """Check and record `node` and its children. `open_nodes` contains the collections being
    walked, so an alias that refers to its own ancestor ends the walk there."""
    if isinstance(node, yaml.ScalarNode):
        kind = _NON_TEXT_TAGS.get(node.tag)
        if kind is not None and node.style is None:
            document.non_text_scalars[location] = (node.value, kind)
        return
    if id(node) in open_nodes:
        return
    open_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*location, index), document, open_nodes)
    elif isinstance(node, yaml.MappingNode):
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in first_lines:
                where = path_text(location)
                document.problems.append(
                    f"{where + ': ' if where else ''}key {key!r} is written twice, at line "
                    f"{first_lines[key]} and at line {line}; keep one of them, because YAML "
                    "would silently use the last"
                )
            else:
                first_lines[key] = line
            _walk(value_node, (*location, key), document, open_nodes)
    open_nodes.discard(id(node))
