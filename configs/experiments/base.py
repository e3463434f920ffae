"""Shared parts of the experiment configs: a dataset config plus an `experiment` grid.

Every configs/experiments/NAME.py builds on the dataset config named after
the colon of --config (ml_collections passes it to get_config):

  --config=configs/experiments/overall.py                  # its default dataset
  --config=configs/experiments/overall.py:baby_synthetic   # configs/baby_synthetic.py
  --config=configs/experiments/overall.py:path/to/mine.py  # any dataset config file

The dataset config supplies the data and the hyper-parameters of "MILK";
the variants change only what they name. Any field can still be overridden
on the command line, e.g. --config.train.num_epochs=40 or
--config.experiment.num_seeds=3. milk_jax/experiment.py documents the fields.
"""

import importlib
import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from milk_jax.errors import ConfigFileError

# The paper's ablation switches, as dotted config overrides.
MILK = {}
ERM = {'model.use_alignment': False, 'model.use_invariance': False}
NO_CMAM = {'model.use_alignment': False}
NO_CEIM = {'model.use_invariance': False}
PAPER_BETA = 1000.0  # The paper's REx weight for Baby (spec, "Reported settings").

METRICS = ('test.recall@10', 'test.ndcg@10', 'test.recall@20', 'test.ndcg@20')


def dataset_names() -> list[str]:
  """The dataset configs in configs/: each NAME.py with a get_config() of no argument."""
  folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  names = []
  for file in sorted(os.listdir(folder)):
    name, ext = os.path.splitext(file)
    if ext == '.py' and name not in ('__init__', 'base', 'run'):
      with open(os.path.join(folder, file), encoding='utf-8') as f:
        if 'def get_config()' in f.read():
          names.append(name)
  return names


def dataset_config(dataset: str) -> ml_collections.ConfigDict:
  """The config of a dataset: a name in configs/ ('ml100k') or a path to a .py file."""
  # ConfigFileError, not ValueError: ml_collections would fold a ValueError into a traceback.
  if dataset.endswith('.py'):
    path = os.path.expanduser(dataset)
    if not os.path.isfile(path):
      raise ConfigFileError(f'{dataset}: no such dataset config file')
    spec = importlib.util.spec_from_file_location('dataset_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  else:
    names = dataset_names()
    if dataset not in names:
      raise ConfigFileError(f'unknown dataset {dataset!r} after the colon of --config; the '
                            f'datasets are {", ".join(names)} (configs/NAME.py), or give a '
                            'path ending in .py')
    module = importlib.import_module(f'configs.{dataset}')
  return module.get_config()


def with_paper_beta(variants: list, config: ml_collections.ConfigDict) -> list:
  """Adds MILK at the paper's beta when the dataset's own MILK uses another one."""
  if config.train.beta != PAPER_BETA:
    variants = variants + [('MILK_beta1000', {'train.beta': PAPER_BETA})]
  return variants


def experiment_config(config: ml_collections.ConfigDict, name: str, settings: tuple[str, ...],
                      variants: list, **fields) -> ml_collections.ConfigDict:
  """A dataset's config with an `experiment` grid added; `fields` override its defaults."""
  exp = config.experiment = ml_collections.ConfigDict()
  exp.name = name  # Title of the summary and figures.
  exp.settings = tuple(settings)  # data.setting of each block of runs.
  exp.variants = tuple((n, dict(o)) for n, o in variants)  # (name, {dotted key: value}).
  exp.num_seeds = 5  # Seeds 0..num_seeds-1, each its own split, masks and init.
  # Folder of the run folders; None = the experiment's --workdir. Experiments that
  # share one reuse each other's identical runs (e.g. ERM and MILK of overall/ablation).
  exp.runs_dir = config_dict.placeholder(str)
  # Methods (milk_jax/methods/ names) added as variants after these, each with the
  # dataset config's hyper-parameters, e.g. ('duif', 'heater').
  exp.methods = ()
  # Methods of `methods` that also run at their original's validation cadence, as
  # '<Name>_own_cadence' (INFO.original_cadence of milk_jax/methods/<name>.py), e.g. ('gar',).
  exp.own_cadence = ()
  exp.baseline = 'ERM'  # Variant the others are compared with, paired by seed.
  exp.only = ()  # Names of the variants to run and summarise (the baseline is kept); () = all.
  exp.train_missing = True  # False: summarise the finished runs only, train nothing.
  exp.metrics = METRICS  # results.json keys to summarise; '*' = every group.
  exp.plots = ('bars',)  # Figures: bars | drop | groups | sweep.
  exp.plot_metric = 'test.ndcg@20'  # The metric the figures and gains show.
  for key, value in fields.items():
    exp[key] = value
  return config
