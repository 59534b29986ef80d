"""Imported only by the warm-start forkserver (see flows/warm_start.py): importing it IS the warm-up."""

from __future__ import annotations

from flows.warm_start import warm_up
from tasks.settings import load_settings

warm_up(load_settings())
