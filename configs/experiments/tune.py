"""The baselines' hyper-parameter search, on validation only.

Each method's `SEARCH` (configs/methods/<name>.py) is tried one field at a
time, the other fields at their defaults, under FTMT with seeds 0-2; the
summary shows validation metrics only, so the choice never sees a test
number. `scripts/choose_hparams.py SUMMARY_CSV` prints the best value of
each field as config lines, which the dataset config then records:

  .venv/bin/python main.py --mode=experiment --config=configs/experiments/tune.py:ml100k \
      --workdir=runs/tune/ml100k
  .venv/bin/python scripts/choose_hparams.py runs/tune/ml100k/summary.csv

`tune.py:ml100k,heater,clcrec` restricts the search to the methods named
after the dataset.
"""

from configs import methods as method_configs
from configs.experiments import base

VAL_METRICS = ('val.ndcg@20', 'val.recall@20')


def variant_name(method: str, field: str | None = None, value=None) -> str:
  """'heater', 'heater.alpha=0.01', 'dropoutnet.hidden=400+200' (a folder name)."""
  if field is None:
    return method
  if isinstance(value, (tuple, list)):
    value = '+'.join(str(v) for v in value)
  return f'{method}.{field}={value}'


def search_variants(config, names) -> list:
  """(name, overrides): each method at its defaults, then each searched value that differs."""
  variants = []
  for method, space in method_configs.search_spaces().items():
    if names and method not in names:
      continue
    variants.append((variant_name(method), {'method': method}))
    for field, values in space.items():
      default = config.methods[method][field]
      for value in values:
        if value != default:
          variants.append((variant_name(method, field, value),
                           {'method': method, f'methods.{method}.{field}': value}))
  return variants


def get_config(arg: str = 'ml100k'):
  dataset, *names = arg.split(',')
  config = base.dataset_config(dataset)
  # The search starts from each method's own defaults, not from values it chose before.
  config.methods = method_configs.all_sections()
  config = base.experiment_config(config, 'tune', ('ftmt',), search_variants(config, names),
                                  num_seeds=3, baseline=None, metrics=VAL_METRICS, plots=(),
                                  plot_metric=VAL_METRICS[0])
  return config
