"""MILK as a method: the move into milk_jax/methods/milk.py changed no number.

PINNED was recorded with the code before the method interface (commit
cc0fd74, `train.py` holding MILK's objective), under this suite's jax flags
(tests/conftest.py), by training each variant below for 6 epochs. The same
runs now go through `config.method='milk'` and must give the same floats.

The metrics are compared to the last bit. An epoch's logged loss is the mean
of its steps' losses, and XLA's order for that sum can differ between CPU
models (the device sampler's scanned epoch on an AMD EPYC with AVX-512 logs
epoch 6 one float32 ulp away from the pinned value, with bit-identical
parameters and metrics), so losses may differ by at most one ulp.
"""

import numpy as np
import pytest

from milk_jax import runfolder
from milk_jax import train
from tests.helpers import tiny_config

PINNED = {
    'milk_host': {'best_epoch': 6, 'test_ndcg@20': 0.30459750673306063,
        'test_recall@20': 0.6931866219958419, 'val_ndcg@20': 0.3300298256210134,
        'losses': (0.697085976600647, 0.6945726871490479, 0.6939722895622253, 0.6902285218238831, 0.6893205046653748, 0.6862196922302246)},
    'milk_device': {'best_epoch': 6, 'test_ndcg@20': 0.2936672294664683,
        'test_recall@20': 0.6588050434424443, 'val_ndcg@20': 0.33253304566009134,
        'losses': (0.6983404755592346, 0.6958348751068115, 0.6930531859397888, 0.6910698413848877, 0.6894105076789856, 0.6869779825210571)},
    'erm': {'best_epoch': 6, 'test_ndcg@20': 0.3007269865311917,
        'test_recall@20': 0.6818658120977054, 'val_ndcg@20': 0.33181332334687436,
        'losses': (0.6919984221458435, 0.6899880766868591, 0.6897158026695251, 0.6862519383430481, 0.685596764087677, 0.6826581954956055)},
    'milk_m3_groups': {'best_epoch': 6, 'test_ndcg@20': 0.26112105125604673,
        'test_recall@20': 0.6187984777051349, 'val_ndcg@20': 0.2982098002766454,
        'losses': (0.6988765001296997, 0.6970765590667725, 0.6946597695350647, 0.6929623484611511, 0.6914536952972412, 0.6888706684112549)},
}


def _variant(name):
  if name == 'milk_host':
    return tiny_config()
  if name == 'milk_device':
    return tiny_config(sampler='device')
  config = tiny_config()
  if name == 'erm':
    config.model.use_invariance = False
    config.model.use_alignment = False
  else:  # Three modalities, new items in every missing group.
    config.data.synthetic.feature_dims = (24, 12, 8)
    config.data.modalities = ('image', 'text', 'audio')
    config.data.setting = 'groups'
  return config


@pytest.mark.parametrize('name', [
    'milk_host', 'erm',
    pytest.param('milk_device', marks=pytest.mark.slow),
    pytest.param('milk_m3_groups', marks=pytest.mark.slow)])
def test_results_are_those_recorded_before_the_move(name, tmp_path):
  config = _variant(name)
  assert config.method == 'milk'  # The default method.
  results = train.train_and_evaluate(config, str(tmp_path))
  losses = tuple(r['loss'] for r in runfolder.read_log(str(tmp_path / 'metrics.jsonl'))
                 if r['kind'] == 'train')
  pinned = PINNED[name]
  np.testing.assert_array_max_ulp(np.float32(losses), np.float32(pinned['losses']), maxulp=1)
  assert results['best_epoch'] == pinned['best_epoch']
  assert results['test']['ndcg@20'] == pinned['test_ndcg@20']
  assert results['test']['recall@20'] == pinned['test_recall@20']
  assert results['val']['ndcg@20'] == pinned['val_ndcg@20']
