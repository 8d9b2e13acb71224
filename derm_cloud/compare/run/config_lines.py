"""Where a key stands in a config file, so every error can name its line.

`tomllib` keeps no positions, so `toml_line` finds a key in the TOML source; PyYAML's node tree gives
YAML positions directly. Both parsers here return the data and a `locate(path) -> line` function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from derm_cloud.compare.run.config import ConfigFileError
from derm_cloud.errors import ConfigError

__all__ = ["Locate", "parse_toml", "parse_yaml", "toml_line"]

#: ``locate(path)``: the 1-based line of the key at ``path`` (``None`` when unknown).
Locate = Callable[[tuple[str | int, ...]], int | None]


def parse_toml(text: str, file: str | None) -> tuple[Any, Locate]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m[1]) if m else None
        raise ConfigFileError(f"not valid TOML: {exc}", key="<syntax>", line=line, file=file) from None
    return data, lambda path: toml_line(text, path)


def parse_yaml(text: str, file: str | None) -> tuple[Any, Locate]:
    try:
        import yaml
    except ImportError as exc:
        raise ConfigError("YAML configs need PyYAML; run: pip install 'derm-cloud[compare]' or use TOML") from exc
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigFileError(
            f"not valid YAML: {exc}", key="<syntax>", line=mark.line + 1 if mark else None, file=file
        ) from None

    def locate(path: tuple[str | int, ...]) -> int | None:
        current, line = node, None
        for part in path:
            if current is None:
                break
            if isinstance(current, yaml.MappingNode):
                nxt = None
                for k, v in current.value:
                    if k.value == part:
                        line, nxt = k.start_mark.line + 1, v
                        break
                current = nxt
            elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
                current = current.value[part]
                line = current.start_mark.line + 1
            else:
                break
        return line

    return data if data is not None else {}, locate


def toml_line(text: str, path: tuple[str | int, ...]) -> int | None:
    """Best-effort 1-based line of a key in TOML source (tomllib keeps no positions).

    Splits the source into table blocks, gives each block its full key path (`[[backends]]` blocks get their
    array index; `[backends.emulator]` belongs to the latest `[[backends]]`), picks the block that is the
    longest prefix of `path` and scans it for `key =` (also inside inline tables and dotted keys).
    """
    lines = text.splitlines()
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    blocks: list[tuple[tuple[str | int, ...], int, int]] = []  # (full path, header line index, first line)
    arrays: dict[str, int] = {}
    for i, ln in enumerate(lines):
        m = header_re.match(ln)
        if not m:
            continue
        parts = [p.strip().strip('"') for p in m[2].split(".")]
        full: list[str | int] = []
        for j, part in enumerate(parts):
            full.append(part)
            prefix = ".".join(parts[: j + 1])
            is_last = j == len(parts) - 1
            if m[1] == "[[" and is_last:
                arrays[prefix] = arrays.get(prefix, -1) + 1
                full.append(arrays[prefix])
            elif prefix in arrays:
                full.append(arrays[prefix])
        blocks.append((tuple(full), i, i + 1))
    bounds = [b[1] for b in blocks] + [len(lines)]
    spans: list[tuple[tuple[str | int, ...], int | None, int, int]] = [((), None, 0, bounds[0])]
    spans += [(full, hdr, first, bounds[k + 1]) for k, (full, hdr, first) in enumerate(blocks)]
    best = max(
        (s for s in spans if tuple(path[: len(s[0])]) == s[0]),
        key=lambda s: len(s[0]),
        default=None,
    )
    if best is None:
        return None
    block_path, hdr, start, end = best
    keys = [str(p) for p in path[len(block_path) :] if not isinstance(p, int)]
    header_line = hdr + 1 if hdr is not None else None
    for key in reversed(keys):
        pattern = re.compile(rf"(^|[\s{{,.])[\"']?{re.escape(key)}[\"']?\s*=")
        for i in range(start, end):
            if pattern.search(lines[i].split("#", 1)[0]):
                return i + 1
    return header_line
