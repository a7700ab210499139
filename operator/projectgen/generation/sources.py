"""Inline and ConfigMap sources: bytes from the spec or from a ConfigMap, written by path."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from projectgen.api.v1alpha1.common import CONFIGMAP_KEY_PATTERN
from projectgen.api.v1alpha1.generatedproject import ConfigMapSource, InlineSource
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.paths import check_path
from projectgen.generation.tree import TreeWriter

_KEY = re.compile(CONFIGMAP_KEY_PATTERN)
MAX_KEY = 253


@dataclass(frozen=True, slots=True)
class ConfigMapData:
    """The content of a ConfigMap, as the loader found it."""

    data: dict[str, str] = field(default_factory=dict)
    binary_data: dict[str, bytes] = field(default_factory=dict)


def decode_configmap(obj: Mapping[str, Any]) -> tuple[str, ConfigMapData]:
    """A ConfigMap object, as the API server returns it or as written in YAML: its name and content.

    The one decoder for both the operator and `projectgen render`. Raises GenerationError naming
    what is wrong (the API server never returns such an object; a YAML file may hold one).
    """
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise GenerationError("a ConfigMap without metadata.name")
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    if not isinstance(data, dict) or not isinstance(binary, dict):
        raise GenerationError(f"ConfigMap {name!r}: data and binaryData must be mappings")
    text: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise GenerationError(
                f"ConfigMap {name!r}: data.{key} must be a string (quote it in YAML), not {type(value).__name__}"
            )
        text[str(key)] = value
    raw: dict[str, bytes] = {}
    for key, value in binary.items():
        try:
            raw[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GenerationError(f"ConfigMap {name!r}: binaryData.{key} is not valid base64") from exc
    return name, ConfigMapData(data=text, binary_data=raw)


ConfigMapLoader = Callable[[str], ConfigMapData | None]
"""ConfigMap name -> its content, or None when there is no such ConfigMap (yet). The caller
binds it to the resource's own namespace."""


class ConfigMaps:
    """Loads each ConfigMap once per render, so every source sees the same content."""

    def __init__(self, loader: ConfigMapLoader) -> None:
        self._loader = loader
        self._cache: dict[str, ConfigMapData] = {}

    def get(self, name: str, where: str) -> ConfigMapData:
        if name not in self._cache:
            found = self._loader(name)
            if found is None:
                raise SourceUnavailable(
                    f"{where}: ConfigMap {name!r} not found in this namespace; waiting for it to be created"
                )
            self._cache[name] = found
        return self._cache[name]


def apply_inline(writer: TreeWriter, source: InlineSource, where: str) -> None:
    for i, f in enumerate(source.files):
        at = f"{where}.files[{i}]"
        path = check_path(f.path, at)
        if f.content_base64 is not None:
            try:
                data = base64.b64decode(f.content_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise GenerationError(f"{at}: contentBase64 of {path!r} is not valid base64") from exc
        else:
            try:
                data = (f.content or "").encode("utf-8")
            except UnicodeEncodeError as exc:
                raise GenerationError(f"{at}: content of {path!r} is not valid UTF-8 text") from exc
        writer.write_bytes(path, data, executable=bool(f.executable), where=at)


def configmap_files(
    cm: ConfigMapData, source: ConfigMapSource, where: str
) -> Iterator[tuple[str, bytes, str]]:
    """(path, content, where) of every file a ConfigMap source projects, as a ConfigMap volume
    would: the listed items at their paths, or else every key as a top-level file."""
    name = source.name
    both = cm.data.keys() & cm.binary_data.keys()
    if both:
        raise GenerationError(
            f"{where}: key {sorted(both)[0]!r} is in both data and binaryData of ConfigMap {name!r}"
        )

    def content(key: str) -> bytes:
        if key in cm.binary_data:
            return bytes(cm.binary_data[key])
        try:
            return cm.data[key].encode("utf-8")
        except UnicodeEncodeError as exc:
            raise GenerationError(f"{where}: key {key!r} of ConfigMap {name!r} is not valid UTF-8") from exc

    if source.items is None:
        for key in sorted(cm.data.keys() | cm.binary_data.keys()):
            at = f"{where}: key {key!r} of ConfigMap {name!r}"
            if len(key) > MAX_KEY or not _KEY.fullmatch(key):
                raise GenerationError(
                    f"{at}: not a valid ConfigMap key (letters, digits, '-', '_' and '.'); "
                    "use items to give it a path"
                )
            yield check_path(key, at), content(key), at
        return
    for i, item in enumerate(source.items):
        at = f"{where}.items[{i}]"
        if item.key not in cm.data and item.key not in cm.binary_data:
            raise GenerationError(f"{where}: key {item.key!r} not found in ConfigMap {name!r}")
        yield check_path(item.path, at), content(item.key), f"{at} (key {item.key!r})"


def apply_configmap(writer: TreeWriter, source: ConfigMapSource, where: str, configmaps: ConfigMaps) -> None:
    cm = configmaps.get(source.name, where)
    for path, data, at in configmap_files(cm, source, where):
        writer.write_bytes(path, data, executable=False, where=at)
