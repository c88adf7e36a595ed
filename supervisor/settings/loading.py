"""Loading the configuration: defaults < file < environment < command line, then validated.

Apart from the schema (`config`) and the checks (`validate`) so that neither imports the
other: the schema knows nothing of cross-field rules, the rules read the schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from supervisor.settings import config, probes, validate
from workers.protocol import escape


def load(
    cli: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    file: str | None = None,
) -> config.Config:
    """Merge defaults < file < environment < `cli` (only options actually given) and validate.

    Raises ConfigError naming the offending field as its source spells it. Checks that need
    the memory limit are `validate.against_limit`'s.
    """
    return load_with_origin(cli, environ, file)[0]


def load_with_origin(
    cli: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    file: str | None = None,
) -> tuple[config.Config, dict[str, str]]:
    """`load`, also returning where each top-level field given came from (`--high`,
    `MEMWARDEN_HIGH`, `high (in m.toml)`), for messages about it later."""
    environ = os.environ if environ is None else environ
    source = "--config" if file else "MEMWARDEN_CONFIG"
    file = file or environ.get("MEMWARDEN_CONFIG")
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if file:
        table = config.read_file(file, source)
        merged.update(table)
        shown = escape(file, 300)
        origin.update({k: f"{k} (in {shown})" for k in table})
    env_values, env_origin = config.from_env(environ)
    merged.update(env_values)
    origin.update(env_origin)
    for name, value in cli.items():
        merged[name] = value
        origin[name] = "--" + name.replace("_", "-")
    for name, table in config.NESTED.items():
        if name in merged:
            value, inner = merged.pop(name), merged.get(table, {})
            if isinstance(inner, Mapping):  # else the table itself is wrong, and says so
                merged[table] = {**inner, name: value}
    cfg = validate.derive(config.convert(merged, origin), merged, origin)
    validate.check(cfg, origin)
    probes.check(cfg, origin)
    return cfg, origin
