"""What handlers get from the app: the settings and the engine, set once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.datastructures import State
from sqlalchemy import Engine

from core.settings import Settings


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine


def context(state: State) -> AppContext:
    return state.ctx
