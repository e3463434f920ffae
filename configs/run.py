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
from milk_jax.errors import RunFolderError

SERVING_SECTIONS = ('recommend', 'export')
TRAINING_SECTIONS = ('data', 'model', 'train', 'eval')  # Every version's run has these.


def get_config(run_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(run_dir, 'config.json')
  # RunFolderError, not an OSError or ValueError: ml_collections would defer the
  # first and fold the second into a traceback; the command line prints it as one line.
  if not os.path.isdir(run_dir):
    raise RunFolderError(f'{run_dir}: no such run folder (train one with --config=configs/NAME.py '
                         f'--workdir={run_dir})')
  if not os.path.isfile(path):
    raise RunFolderError(f'{path} is missing: {run_dir} is not a trained milk-jax run folder '
                         '(or pass --config=configs/NAME.py)')
  try:
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise RunFolderError(f'{path} is damaged (not valid JSON: {error})') from None
  except OSError as error:
    raise RunFolderError(f'{path}: {error.strerror}') from None
  if not isinstance(saved, dict):
    raise RunFolderError(f'{path} is damaged (not a JSON object of config sections)')
  lacking = [name for name in TRAINING_SECTIONS if not isinstance(saved.get(name), dict)]
  if lacking:
    raise RunFolderError(f'{path} is damaged (no {", ".join(lacking)} '
                         f'section{"s" if len(lacking) > 1 else ""})')
  defaults = base.get_config()
  try:
    config = ml_collections.ConfigDict(
        {key: value for key, value in saved.items() if key not in SERVING_SECTIONS})
  except (TypeError, ValueError, KeyError, AttributeError) as error:
    raise RunFolderError(f'{path} is damaged (not a config: {error})') from None
  for section in SERVING_SECTIONS:
    config[section] = defaults[section]
  return config
