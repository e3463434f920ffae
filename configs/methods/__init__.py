"""Hyper-parameters of each method: configs/methods/<name>.py, mounted at config.methods.<name>."""

import importlib
import pkgutil

import ml_collections


def all_sections() -> ml_collections.ConfigDict:
  """config.methods: one section per configs/methods/<name>.py."""
  sections = ml_collections.ConfigDict()
  for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    sections[module] = importlib.import_module(f'configs.methods.{module}').get_config()
  return sections


def search_spaces() -> dict[str, dict[str, tuple]]:
  """{method: {field: values}}: the SEARCH of each configs/methods/<name>.py that has one.

  configs/experiments/tune.py tries each value with the other fields at their
  defaults (one field at a time), scored on validation only.
  """
  spaces = {}
  for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    search = getattr(importlib.import_module(f'configs.methods.{module}'), 'SEARCH', None)
    if search:
      spaces[module] = dict(search)
  return spaces
