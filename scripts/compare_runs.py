"""Whether two sets of run folders computed the same thing, to the last bit.

  .venv/bin/python scripts/compare_runs.py BEFORE AFTER

BEFORE and AFTER hold run folders of the same names (`scripts/default_results.sh`
writes `run_<method>` folders). Per folder it compares results.json and every
record of metrics.jsonl with their timing fields left out (keys naming seconds),
config.json, and every array of vectors.npz and serving.npz, bit for bit. A
config field that only AFTER has is a field added since (at its default) and
is left out; a field changed or removed is a difference. It prints one line
per folder and exits 1 when any differs or is missing.
"""

import json
import pathlib
import sys

import numpy as np

TIMING_KEYS = ('seconds', 'per_second')  # Wall-clock figures: all a rerun may change.


def without_timings(value):
  """`value` with every dict entry whose key names a timing removed, at any depth."""
  if isinstance(value, dict):
    return {k: without_timings(v) for k, v in value.items()
            if not any(t in k for t in TIMING_KEYS)}
  if isinstance(value, list):
    return [without_timings(v) for v in value]
  return value


def _json(path: pathlib.Path):
  return without_timings(json.loads(path.read_text()))


def without_added(after, before):
  """`after` without the dict entries, at any depth, that `before` does not have."""
  if isinstance(after, dict) and isinstance(before, dict):
    return {k: without_added(v, before[k]) for k, v in after.items() if k in before}
  return after


def _log(path: pathlib.Path) -> list:
  return [without_timings(json.loads(line)) for line in path.read_text().splitlines() if line]


def _arrays_equal(a: pathlib.Path, b: pathlib.Path) -> bool:
  with np.load(a) as left, np.load(b) as right:
    return (sorted(left.files) == sorted(right.files)
            and all(left[k].dtype == right[k].dtype and np.array_equal(left[k], right[k])
                    for k in left.files))


def differences(before: pathlib.Path, after: pathlib.Path) -> list[str]:
  """The files of run folder `before` that `after` does not reproduce (missing ones too)."""
  checks = {'results.json': _json, 'config.json': _json, 'metrics.jsonl': _log}
  differing = []
  for name in ('results.json', 'config.json', 'metrics.jsonl', 'vectors.npz', 'serving.npz'):
    left, right = before / name, after / name
    if not left.exists():
      continue
    if not right.exists():
      differing.append(f'{name} (missing)')
    elif name.endswith('.npz'):
      if not _arrays_equal(left, right):
        differing.append(name)
    elif name == 'config.json':
      old = checks[name](left)
      if without_added(checks[name](right), old) != old:
        differing.append(name)
    elif checks[name](left) != checks[name](right):
      differing.append(name)
  return differing


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  before, after = pathlib.Path(argv[1]), pathlib.Path(argv[2])
  runs = sorted(p for p in before.iterdir() if (p / 'results.json').exists())
  if not runs:
    print(f'{before}: no run folders (folders holding results.json)', file=sys.stderr)
    return 2
  failed = 0
  for run in runs:
    other = after / run.name
    found = differences(run, other) if other.is_dir() else ['the folder (missing)']
    failed += bool(found)
    print(f'{run.name}: ' + ('identical' if not found else 'DIFFERS in ' + ', '.join(found)))
  print(f'{len(runs) - failed} of {len(runs)} run folders identical')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
