"""The one configuration pattern of the webhook, the controller and the agent.

Each declares its settings as a table of `Setting`s; `add_arguments` turns the table into flags
and `read` resolves every setting once (flag, else environment, else default) into strings that
the component's frozen `*Config.from_env(args, env)` converts and checks. Nothing reads the
environment anywhere else, nor at import time, and the resolved config is passed explicitly.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    env: str
    """Environment variable, the name manifests and the webhook's injected env use."""
    flag: str
    default: str | None
    help: str
    switch: bool = False
    """A flag without a value (`--no-leader-election`): "true" when given."""


def add_arguments(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """One flag per setting; its help names the environment variable and the default."""
    for setting in settings:
        shown = f"; default {setting.default}" if setting.default is not None else ""
        text = f"{setting.help} (env {setting.env}{shown})"
        if setting.switch:
            parser.add_argument(setting.flag, dest=setting.env, action="store_const", const="true", default=None,
                                help=text)
        else:
            parser.add_argument(setting.flag, dest=setting.env, default=None, help=text)


def read(settings: Sequence[Setting], args: argparse.Namespace | None = None,
         env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """env name -> value: the flag if given, else the environment (empty counts as unset), else the default."""
    env = os.environ if env is None else env
    return {s.env: (getattr(args, s.env, None) if args is not None else None) or env.get(s.env) or s.default
            for s in settings}


def at_least(low: float, value: float, name: str) -> float:
    """`value`, or ValueError naming the setting (also for nan)."""
    if not value >= low:
        raise ValueError(f"{name} must be at least {low:g}")
    return value


def number(values: Mapping[str, str | None], name: str, low: float = 0) -> float:
    """A setting as a number of at least `low`; ValueError names it."""
    try:
        return at_least(low, float(values[name] or ""), name)
    except ValueError as err:
        raise ValueError(f"{name} must be a number of at least {low:g}, not {values[name]!r}") from err


def whole(values: Mapping[str, str | None], name: str, low: int = 0) -> int:
    """A setting as a whole number of at least `low`; ValueError names it."""
    text = (values[name] or "").strip()
    if not re.fullmatch(r"-?[0-9]{1,18}", text) or int(text) < low:
        raise ValueError(f"{name} must be a whole number of at least {low}, not {text!r}")
    return int(text)


def flag(values: Mapping[str, str | None], name: str) -> bool:
    return str(values[name]).lower() == "true"
