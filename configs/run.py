"""A trained run's own config: `--config=configs/run.py:RUN_DIR`.

What --mode=eval, recommend and export use when --config is left out, so a
run folder is evaluated and served exactly as it was trained. The recommend
and export sections are this version's defaults (they never affect training),
open to overrides such as `--config.recommend.k=10`.
"""

import json
import os

import ml_collections

from configs import base

SERVING_SECTIONS = ('recommend', 'export')


def get_config(run_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(run_dir, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} is missing: {run_dir} is not a trained milk-jax run folder '
                            '(or pass --config=configs/NAME.py)')
  try:
    with open(path) as f:
      saved = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f'{path} is damaged (not valid JSON: {error})') from None
  defaults = base.get_config()
  config = ml_collections.ConfigDict(
      {key: value for key, value in saved.items() if key not in SERVING_SECTIONS})
  for section in SERVING_SECTIONS:
    config[section] = defaults[section]
  return config
