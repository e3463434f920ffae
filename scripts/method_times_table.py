"""A Markdown table of per-method benchmark.json files (scripts/method_times.sh).

  .venv/bin/python scripts/method_times_table.py runs/times/*/benchmark.json
"""

import json
import sys


def row(result: dict) -> str:
  return (f"| {result.get('method', 'milk')} | {result['step_ms']:.1f} | "
          f"{result['epoch_seconds']:.2f} | {result['compile_seconds']:.1f} |")


def main(paths: list[str]) -> None:
  if not paths:
    sys.exit('error: give benchmark.json files')
  results = []
  for path in paths:
    try:
      with open(path) as f:
        results.append(json.load(f))
    except (OSError, json.JSONDecodeError) as error:
      sys.exit(f'error: {path}: {error}')
  first = results[0]
  print(f"{first['backend']} ({first['device']}, {first['cpu_count']} cores), jax "
        f"{first['jax_version']}; {first['num_users']} users, {first['num_items']} items, "
        f"batch {first['batch_size']}, {first['steps_per_epoch']} steps per epoch\n")
  print(f"| method | step (ms, median) | epoch, {first['sampler']} sampler (s) | compile (s) |")
  print('|---|---|---|---|')
  for result in results:
    print(row(result))


if __name__ == '__main__':
  main(sys.argv[1:])
