"""The method contract: what the shared loop trains, evaluates, checkpoints and serves.

A method is one module, `milk_jax/methods/<name>.py` (or a package
`milk_jax/methods/<name>/`, as MILK is), chosen with `--config.method=<name>`
and found by name (`names`, `get`, `info`): no shared module names a method.
It defines

  make(config, spec: DataSpec) -> Method   reads its hyper-parameters once, as Python
                                           numbers, and returns pure functions (optax's
                                           style: init, loss, embed, and optional hooks);
  check_config(config) -> None             ConfigError on values it cannot honour;
  INFO: MethodInfo                         its display name, backbone, the config fields
                                           only it reads, cadence and serving facts;

and its hyper-parameters live in `configs/methods/<name>.py` (get_config(), one
comment per field), which configs/base.py mounts at `config.methods.<name>`.

Variables, as Flax's `params` and `batch_stats`: `init` returns one dict of
named entries, the method's variables. Those named in `Method.non_trainable`
(BatchNorm's running statistics, MICRO's epoch graphs) are the model state,
kept in TrainState.model_state, never seen by the optimiser; the rest are the
trained params. `loss` and `embed` receive the variables as `init` returned
them (`merge_variables(params, model_state)`), the gradient is taken with
respect to the params only, and the shared update (training/step.py) applies
the optimiser's step to the params, then `update_model_state` to the model
state with what the loss measured (e.g. the batch moments). A method writes its
own `update` only when its step is not one gradient step of its loss.
MILK keeps its historical fields (`config.model.*`, `config.train.beta`, ...),
declared in its INFO.fields like any other method's.

This module holds the contract's types (DataSpec, built from a Dataset by
`data_spec`; Tables, which training builds on device; Method; MethodInfo), the
registry, and the defaults of Method's hooks. The numeric helpers that methods
share (inits, unit rows, BPR, BatchNorm, towers) live in `methods/layers.py`.
Everything else (data, samplers, the scanned epoch, early stopping, resume,
checkpoints, evaluation, experiments, the benchmark) is shared code that reads
a method only through this contract; `tests/methods/test_contract.py` checks
every method against it.
"""

import importlib
import pkgutil
import types
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from milk_jax.data.dataset import Dataset
from milk_jax.errors import ConfigError

Params = Any
Batch = Mapping[str, jax.Array]  # 'users', 'positives', 'negatives': (B,) int32.


class DataSpec(NamedTuple):
  """Static facts a method builds its shapes from."""
  num_users: int  # Rows of the user table (padded when it is sharded).
  num_items: int
  feature_dims: tuple[int, ...]  # One width per modality.
  num_warm_items: int


def data_spec(dataset: Dataset) -> DataSpec:
  """The DataSpec of a `milk_jax.data.Dataset`: its users, items, feature widths, warm items."""
  return DataSpec(num_users=dataset.num_users, num_items=dataset.num_items,
                  feature_dims=tuple(f.shape[1] for f in dataset.features),
                  num_warm_items=int(dataset.warm_items.size))


class Tables(NamedTuple):
  """Device arrays that every step and every evaluation reads."""
  features: tuple[jax.Array, ...]  # M arrays (I, dim_m): imputed, normalised as the data says.
  availability: jax.Array  # (I, M) bool.
  warm_items: jax.Array  # (I_w,) int32: items that may have training interactions.
  is_new: jax.Array  # (I,) bool: validation and test items.
  extras: Mapping[str, jax.Array]  # From the backbone and `Method.prepare`.


def content(tables: Tables, items: jax.Array | None = None) -> jax.Array:
  """The concatenated content of `items` (all when None), (n, F) float32.

  The features arrive imputed and, by default, L2-normalised per modality
  (spec 3.2: the library's input for concat-only baselines).
  """
  parts = [f if items is None else f[items] for f in tables.features]
  return jnp.concatenate([p.astype(jnp.float32) for p in parts], axis=-1)


def step_keys(train_key: jax.Array, first_step: jax.Array, num_steps: int) -> jax.Array:
  """(num_steps,) keys, step s's being fold_in(train_key, s): resume stays exact."""
  steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(train_key, steps)


def no_extras(dataset, extras: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  del dataset
  return dict(extras)


def same_extras(extras: Mapping[str, np.ndarray], features: tuple[np.ndarray, ...],
                availability: np.ndarray) -> dict[str, np.ndarray]:
  """Serving default: a new item's vector reads only its own content, never the extras."""
  del features, availability
  return dict(extras)


class MethodInfo(NamedTuple):
  """What shared code knows of a method besides its functions: each module's `INFO`.

  Read through `info(name)`; no shared module names a method.
  """
  display_name: str  # In tables, figures and log lines: 'MILK', 'BPR-MF'.
  # The warm CF method whose best vectors it reads (tables.extras['cf_users'|'cf_items']).
  backbone: str | None = None
  # Prefixes of the config fields that only this method reads: its `methods.<name>.` section,
  # and for MILK its historical fields (`model.alpha`, `train.beta`, ...). A run of another
  # method ignores them when a run folder's config is compared with the current one.
  fields: tuple[str, ...] = ()
  # Fields besides train.learning_rate that a divergence error advises lowering.
  divergence_fields: tuple[str, ...] = ()
  # The original code's validation cadence, {'train.eval_every': 1, ...}, for
  # `experiment.own_cadence`; None: the original's is the protocol's.
  original_cadence: Mapping[str, Any] | None = None
  # Why items that arrive after training cannot be embedded; None: they can.
  no_serving_reason: str | None = None
  # True when a new item's vector reads warm id rows (MICRO's graphs): the contract test
  # then checks only that new items' rows stay finite, not that they ignore warm rows.
  new_items_read_warm_rows: bool = False


class Method(NamedTuple):
  """A method as pure functions (optax-style); the loop jits closures over them.

  `init`, `loss` and `embed` deal in the variables: the trained params merged with the
  model state (`non_trainable`), one dict as `init` returns it (module docstring).
  """
  init: Callable[[jax.Array], Params]  # key -> variables (a dict of named entries).
  # (variables, batch, step_input, tables) -> (value, metrics); with `update_model_state`
  # set, (value, (metrics, measured)), `measured` what that hook reads (e.g. batch moments).
  loss: Callable[[Params, Batch, Any, Tables], tuple[jax.Array, Any]]
  embed: Callable[[Params, Tables], tuple[jax.Array, jax.Array]]  # -> users (U, d), items (I, d).
  # (train_key, first_step, num_steps) -> a pytree with leading axis num_steps, drawn once per
  # epoch before the scan: MILK's environment weights; by default one key per step.
  step_inputs: Callable[[jax.Array, jax.Array, int], Any] = step_keys
  optimizer: optax.GradientTransformation | None = None  # None: adam(train.learning_rate).
  # Host side, once per run: (dataset, extras from the backbone) -> extras for `Tables`.
  prepare: Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]] = no_extras
  # The entries of init's variables that are not trained (TrainState.model_state): BatchNorm's
  # running statistics ('batch_stats'), MICRO's epoch graphs. The optimiser never sees them.
  non_trainable: tuple[str, ...] = ()
  # (model_state, measured) -> model_state: what the shared update does to the model state
  # after the gradient step, `measured` coming from the loss (its aux's second part), e.g.
  # `layers.batch_stats_update(momentum)`. None: the model state is left as it is.
  update_model_state: Callable | None = None
  # Escape hatch: (state, batch, step_input, tables) -> (state, metrics), for methods whose
  # step is not one gradient step of `loss` (GAR's alternating players, MICRO's graph rebuilt
  # at each epoch's first step under a decaying learning rate).
  update: Callable | None = None
  log_keys: tuple[str, ...] = ()  # Metrics shown in the epoch's log line besides 'loss'.
  # The best epoch is the last one: for a warm backbone, whose vectors do not score new items.
  select_last: bool = False
  # Host side, for items that arrive after training (milk_jax/api.py): (saved extras, the
  # prepared features and availability of I new items) -> the extras of their Tables, which
  # `embed` then reads with every row new. None: the method cannot embed such items.
  serve_extras: Callable | None = same_extras
  # For the benchmark: a plain, unoptimised loss with `loss`'s signature and value, timed
  # beside it (MILK's computes every item's scores in the authors' order). None: it has none,
  # and the benchmark says so.
  reference_loss: Callable | None = None


def merge_variables(params: Params, model_state: Mapping[str, Any]) -> Params:
  """The variables `loss` and `embed` read: the params with the model state's entries beside
  them (the params themselves when there is no model state)."""
  return {**params, **model_state} if model_state else params


def split_variables(variables: Params, non_trainable: tuple[str, ...]
                    ) -> tuple[Params, dict[str, Any]]:
  """(params, model_state) of init's variables: the entries named in `non_trainable` apart."""
  if not non_trainable:
    return variables, {}
  return ({k: v for k, v in variables.items() if k not in non_trainable},
          {k: variables[k] for k in non_trainable})


def names() -> tuple[str, ...]:
  """Every method module under milk_jax/methods/ (those defining `make`; `layers` is a helper)."""
  modules = sorted(m.name for m in pkgutil.iter_modules(__path__))
  return tuple(name for name in modules
               if hasattr(importlib.import_module(f'milk_jax.methods.{name}'), 'make'))


def get(name: str) -> types.ModuleType:
  """The module milk_jax.methods.<name>; ConfigError names the choices."""
  if name not in names():
    raise ConfigError(f'config.method={name!r}: no milk_jax/methods/{name}.py nor '
                      f'milk_jax/methods/{name}/; one of {", ".join(names())}')
  return importlib.import_module(f'milk_jax.methods.{name}')


def info(name: str) -> MethodInfo:
  """The `INFO` of method `name`; ConfigError names the choices."""
  return get(name).INFO


def backbone_of(config) -> str | None:
  return info(config.method).backbone


def optimizer(method: Method, config) -> optax.GradientTransformation:
  return method.optimizer or optax.adam(config.train.learning_rate)


def section_checker(config, name: str) -> tuple[Any, Callable[[bool, str, str], None]]:
  """(config.methods.<name>, require): require(ok, field, message) raises a ConfigError
  naming `config.methods.<name>.<field>` and its value when not ok."""
  section = config.methods[name]

  def require(ok: bool, field: str, message: str) -> None:
    if not ok:
      raise ConfigError(f'config.methods.{name}.{field}={section[field]!r}: {message}')

  return section, require
