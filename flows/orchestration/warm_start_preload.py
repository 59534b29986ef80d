"""Imported only by the warm-start forkserver (see flows/orchestration/warm_start.py): importing it IS the warm-up."""

from __future__ import annotations

from hybridops.flows.orchestration.warm_start import warm_up
from hybridops.tasks.core.settings import load_settings

warm_up(load_settings())
