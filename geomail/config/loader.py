"""Reading the configuration file: strict YAML (no duplicate keys), then the schema."""

from __future__ import annotations

import os
from typing import Any

import yaml

from geomail.config.objects import Config
from geomail.config.schema import parse_config
from geomail.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str) -> Config:
    """Read and parse the YAML file at ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=_StrictLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    return parse_config(raw, source=path)


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names (certificate, key, DKIM keys)."""
    problems = []
    wanted: list[tuple[str, str]] = []
    if config.tls and config.tls.acme:  # the certificate is ACME's to make
        if config.tls.acme.ca_file:
            wanted.append(("tls.acme.ca_file", config.tls.acme.ca_file))
    elif config.tls:
        wanted += [("tls.cert", config.tls.cert), ("tls.key", config.tls.key)]
    if config.dkim:
        wanted += [(f"dkim.keys.{d}", p) for d, p in config.dkim.keys.items()]
    for key, path in wanted:
        if not os.path.isfile(path):
            problems.append(f"{key}: file {path} does not exist")
        elif not os.access(path, os.R_OK):
            problems.append(f"{key}: file {path} is not readable")
    return problems
