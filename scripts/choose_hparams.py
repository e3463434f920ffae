"""Print the validation-best value of each searched field from a tune experiment's summary.csv.

  .venv/bin/python scripts/choose_hparams.py runs/tune/ml100k/summary.csv [--metric=val.ndcg@20]

For each method, each searched field takes the value whose variant has the
highest mean validation metric over seeds, the method's defaults competing as
the variant named after the method. Prints `config.methods.<m>.<field> = value`
lines with the mean, for the dataset config.
"""

import argparse
import csv
import os
import re
import sys
from collections import defaultdict

_VARIANT = re.compile(r'^(?P<method>[a-z0-9_]+)(?:\.(?P<field>[a-z0-9_]+)=(?P<value>.+))?$')


def read_means(path: str, metric: str) -> dict[str, float]:
  if not os.path.isfile(path):
    sys.exit(f'error: {path} not found: run the tune experiment first (see its docstring)')
  with open(path, newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['metric'] == metric and r['mean']]
  if not rows:
    sys.exit(f'error: {path} has no rows for metric {metric!r}')
  return {r['variant']: float(r['mean']) for r in rows}


def choose(means: dict[str, float]) -> dict[str, dict[str, tuple[str, float]]]:
  """{method: {field: (value, mean)}}, 'default' standing for the method's own value."""
  by_field = defaultdict(dict)
  defaults = {}
  for variant, mean in means.items():
    match = _VARIANT.match(variant)
    if not match:
      continue
    if match['field'] is None:
      defaults[match['method']] = mean
    else:
      by_field[(match['method'], match['field'])][match['value']] = mean
  chosen = defaultdict(dict)
  for (method, field), values in sorted(by_field.items()):
    if method in defaults:
      values = {**values, 'default': defaults[method]}
    value = max(values, key=values.get)
    chosen[method][field] = (value, values[value])
  return chosen


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('summary')
  parser.add_argument('--metric', default='val.ndcg@20')
  args = parser.parse_args()
  means = read_means(args.summary, args.metric)
  for method, fields in choose(means).items():
    print(f'# {method}: defaults {means.get(method, float("nan")):.4f} {args.metric}')
    for field, (value, mean) in fields.items():
      if value != 'default':
        print(f'config.methods.{method}.{field} = {value}  # {mean:.4f}')


if __name__ == '__main__':
  main()
