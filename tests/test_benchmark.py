"""Tests for milk_jax.benchmark: the written files, with and without a reference step.

That MILK's reference loss equals its loss is tests/methods/milk/test_reference.py's.
"""

import csv
import json

import numpy as np
import pytest

from milk_jax import benchmark
from milk_jax.errors import ConfigError


@pytest.fixture
def config(make_config):
  """make_config() with a benchmark of few steps."""
  config = make_config()
  bench = config.benchmark
  bench.warmup_steps, bench.num_steps, bench.num_epochs, bench.sweep_steps = 1, 3, 1, 2
  return config


@pytest.mark.slow  # Steps, epochs and the sweep: the longest test of the fast suite.
def test_benchmark_writes_its_figures(tmp_path, capsys, config):
  config.benchmark.sweep = True
  config.benchmark.sweep_batch_sizes = (32, 64)
  config.benchmark.sweep_num_items = (100, 300)
  result = benchmark.benchmark(config, str(tmp_path))
  with open(tmp_path / 'benchmark.json') as f:
    written = json.load(f)
  for key in ('backend', 'device', 'jax_version', 'batch_size', 'num_items', 'compile_seconds',
              'step_ms', 'step_ms_p90', 'steps_per_second', 'samples_per_second',
              'epoch_seconds', 'epoch_seconds_host', 'epoch_seconds_device',
              'reference_step_ms', 'speedup_vs_reference', 'simple_step_ms',
              'step_inputs_ms_per_epoch', 'epoch_step_ms'):
    assert key in written, key
  assert written['batch_size'] == 256 and written['num_items'] == 160
  assert written['step_ms_p90'] >= written['step_ms'] > 0
  np.testing.assert_allclose(written['samples_per_second'],
                             256 * written['steps_per_second'], rtol=1e-6)
  assert result['step_ms'] == written['step_ms']
  assert 'samples/s' in capsys.readouterr().out
  with open(tmp_path / 'sweep.csv') as f:
    rows = list(csv.DictReader(f))
  # Two batch sizes (fused only), two catalogue sizes (fused and reference).
  assert [(r['axis'], r['step']) for r in rows] == [
      ('batch_size', 'fused'), ('batch_size', 'fused'),
      ('num_items', 'fused'), ('num_items', 'reference'),
      ('num_items', 'fused'), ('num_items', 'reference')]
  assert [int(r['num_items']) for r in rows if r['axis'] == 'num_items'] == [100, 100, 300, 300]
  assert (tmp_path / 'sweep.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.slow  # A second full benchmark: about 18 s.
def test_a_second_benchmark_keeps_the_first(tmp_path, config):
  config.benchmark.reference = False
  benchmark.benchmark(config, str(tmp_path))
  first = (tmp_path / 'benchmark.json').read_text()
  benchmark.benchmark(config, str(tmp_path))
  assert (tmp_path / 'benchmark.1.json').read_text() == first
  assert 'reference_step_ms' not in json.loads((tmp_path / 'benchmark.json').read_text())


def test_bad_benchmark_config_fails_before_writing(tmp_path, config):
  config.benchmark.num_steps = 0
  with pytest.raises(ConfigError, match="num_steps"):
    benchmark.benchmark(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


@pytest.mark.slow  # A baseline's benchmark, one sampler: about 10 s.
def test_a_baseline_without_a_reference_is_timed_with_one_sampler(tmp_path, config):
  config.method = 'heater'  # Reads a backbone: timed on random vectors, none trained.
  config.benchmark.both_samplers = False
  config.train.sampler = 'device'
  written = benchmark.benchmark(config, str(tmp_path))
  assert written['method'] == 'heater' and written['epoch_seconds'] > 0
  assert 'epoch_seconds_device' in written and 'epoch_seconds_host' not in written
  assert 'reference_step_ms' not in written and written['step_inputs_ms_per_epoch'] > 0
  assert written['reference_skipped'] == benchmark.NO_REFERENCE.format(method='heater')
  assert not (tmp_path / 'backbone').exists()
  config.benchmark.sweep = True
  with pytest.raises(ConfigError, match='benchmark.sweep'):
    benchmark.benchmark(config, str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()  # Refused before anything is written.
