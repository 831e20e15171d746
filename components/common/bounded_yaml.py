"""YAML read with bounds: a size cap and no aliases, so a kilobyte of nested aliases (a "billion
laughs" bomb) is refused in microseconds instead of expanding to gigabytes.

    raw = bounded_yaml.load_file(path)          # a card, a profile, a settings file
    raw = bounded_yaml.loads(text, where="--set steps")

Our files (cards, profiles, settings) never need anchors; an alias (`*name`, or a `<<: *name` merge)
is refused with the line it is on. Everything else is `yaml.SafeLoader`'s reading.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped card is about 4 KB


class YamlRefused(yaml.YAMLError, ValueError):
    """The file is too large or uses an alias; the message names the file and the fix."""


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise YamlRefused(
                f"uses a YAML alias (*{event.anchor}) on line {line}; aliases are not accepted here "
                "(they can expand a small file into gigabytes): write the values out"
            )
        return super().compose_node(parent, index)


def loads(text: str, where: str = "YAML text") -> object:
    """Parse `text` (at most `MAX_BYTES`) without aliases."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(f"{where} is larger than {MAX_BYTES // 1024} KiB; refused unread")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlRefused as e:
        raise YamlRefused(f"{where} {e}") from None


def load_file(path: str | Path) -> object:
    """Read and parse a YAML file: its size is checked before a byte is read."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YamlRefused(f"{path} is {size:,} bytes, over the {MAX_BYTES // 1024} KiB limit; refused unread")
    return loads(path.read_text(encoding="utf-8"), where=str(path))
