"""Tests for milk_jax.methods.milk.reference: the benchmark's reference loss is MILK's loss."""

import jax
import numpy as np
import pytest

from milk_jax import data as data_lib
from milk_jax.methods import milk
from milk_jax.methods.milk import objective
from milk_jax.training import state as state_lib


@pytest.mark.parametrize('reg_target,fusion', [
    ('embeddings', 'mean'), ('params', 'mean'), ('embeddings', 'present')])
def test_reference_loss_equals_the_fused_loss(reg_target, fusion, make_config):
  config = make_config(train={'reg_target': reg_target})
  config.model.fusion = fusion
  config.data.setting = 'mtmt'  # Warm items missing a modality: 'present' renormalises them.
  dataset = data_lib.load_dataset(config)
  method = state_lib.make_method(config, dataset)
  params = method.init(jax.random.key(0))
  tables = state_lib.tables_on_device(dataset)
  users, positives, negatives = data_lib.epoch_triples(np.random.default_rng(0), dataset, 64)
  batch = {'users': users[0], 'positives': positives[0], 'negatives': negatives[0]}
  assert not dataset.availability[batch['positives']].all()  # The batch has incomplete items.
  weights = milk.step_weights(objective.read_hyper(config), jax.random.key(3), 2)
  fused, fused_metrics = method.loss(params, batch, weights, tables)
  reference, reference_metrics = method.reference_loss(params, batch, weights, tables)
  np.testing.assert_allclose(reference, fused, rtol=1e-5)
  np.testing.assert_allclose(reference_metrics['env_variance'], fused_metrics['env_variance'],
                             rtol=1e-4, atol=1e-9)


def test_modality_dropout_has_no_reference(make_config):
  # The authors' step has no modality dropout: the benchmark then times no reference.
  config = make_config()
  config.train.modality_dropout = 0.5
  method = state_lib.make_method(config, data_lib.load_dataset(config))
  assert method.reference_loss is None
