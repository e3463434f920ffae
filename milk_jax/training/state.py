"""The train state of any method, the method built for the data, and the tables it reads.

What is trained is `config.method`'s `Method` (milk_jax/methods/), built for
the dataset's shapes (its `DataSpec`); nothing here is method-specific.
"""

from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax import sharding
from milk_jax.config import FEATURE_DTYPES
from milk_jax.methods import Method
from milk_jax.methods import Tables

# Streams of the run's root key (fold_in(key(seed), n)): the parameters' init,
# the per-step draws, and the device sampler's shuffles and negatives.
INIT_STREAM, TRAIN_STREAM, SAMPLE_STREAM = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  """What a run trains: the params (what the optimiser sees), its state, and the model state.

  The model state holds the method's non-trainable variables (`Method.non_trainable`:
  BatchNorm's running statistics, MICRO's epoch graphs), {} for methods without any, as
  Flax keeps `batch_stats` beside `params`.
  """
  step: jax.Array  # Updates applied so far: the per-step keys fold it in.
  params: Any
  opt_state: optax.OptState
  model_state: dict[str, Any] = flax.struct.field(default_factory=dict)

  @property
  def variables(self) -> Any:
    """The params merged with the model state: what `Method.loss` and `embed` read, and what
    the best checkpoint holds."""
    return methods.merge_variables(self.params, self.model_state)


def make_method(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> Method:
  """config.method's Method, built for the dataset's shapes."""
  return methods.get(config.method).make(config, methods.data_spec(dataset))


def train_state(method: Method, variables: Any,
                optimizer: optax.GradientTransformation) -> TrainState:
  """Step 0 at `variables` (as `Method.init` returns them): the params and the model state
  apart, and `optimizer`'s fresh state of the params."""
  params, model_state = methods.split_variables(variables, method.non_trainable)
  opt_state = optimizer.init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    model_state=model_state)


def create_train_state(config: ml_collections.ConfigDict, method: Method, key: jax.Array,
                       num_users: int) -> TrainState:
  """Fresh variables and optimiser state; the user table is padded when it is sharded."""
  variables = method.init(key)
  padding = sharding.num_user_rows(config, num_users) - num_users
  if padding and 'user_embedding' in variables:
    # Zero rows appended after the draw: the real rows match an unsharded run.
    variables['user_embedding'] = jnp.pad(variables['user_embedding'], ((0, padding), (0, 0)))
  return train_state(method, variables, methods.optimizer(method, config))


def tables_on_device(dataset: data_lib.Dataset, feature_dtype: str = 'float32',
                     extras: Mapping[str, np.ndarray] | None = None,
                     placement: jax.sharding.Sharding | None = None) -> Tables:
  """Features (in `feature_dtype`), availability, item groups and extras on device."""
  dtype = FEATURE_DTYPES[feature_dtype]
  is_new = np.zeros(dataset.num_items, bool)
  is_new[dataset.val_items] = True
  is_new[dataset.test_items] = True
  tables = Tables(features=tuple(jnp.asarray(f, dtype) for f in dataset.features),
                  availability=jnp.asarray(dataset.availability),
                  warm_items=jnp.asarray(dataset.warm_items, jnp.int32),
                  is_new=jnp.asarray(is_new),
                  extras={k: jnp.asarray(v) for k, v in (extras or {}).items()})
  return tables if placement is None else jax.device_put(tables, placement)


def host_tables(dataset: data_lib.Dataset, feature_dtype: str = 'float32',
                extras: Mapping[str, np.ndarray] | None = None) -> Tables:
  """`tables_on_device`'s tables as host (numpy) arrays, features already in `feature_dtype`."""
  dtype = FEATURE_DTYPES[feature_dtype]
  is_new = np.zeros(dataset.num_items, bool)
  is_new[dataset.val_items] = True
  is_new[dataset.test_items] = True
  return Tables(features=tuple(np.asarray(f, dtype) for f in dataset.features),
                availability=np.asarray(dataset.availability),
                warm_items=np.asarray(dataset.warm_items, np.int32),
                is_new=is_new,
                extras={k: np.asarray(v) for k, v in (extras or {}).items()})


def tables_by_item_rows(dataset: data_lib.Dataset, mesh: jax.sharding.Mesh,
                        feature_dtype: str = 'float32',
                        extras: Mapping[str, np.ndarray] | None = None) -> tuple[Tables, Any]:
  """The tables with each per-item one split by rows over `mesh` (`train.shard_item_features`),
  and which ones are (`sharding.per_item_leaves`, for `sharding.drop_item_padding`).

  Built and padded on the host, so each device receives only its own rows: the full
  feature table never sits on one device.
  """
  tables = host_tables(dataset, feature_dtype, extras)
  per_item = sharding.per_item_leaves(tables, dataset.num_items)
  padded = sharding.pad_item_rows(tables, per_item,
                                  sharding.padded_rows(dataset.num_items, mesh))
  return sharding.put_item_tables(padded, per_item, mesh), per_item
