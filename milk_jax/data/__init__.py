"""Data: reading the layouts, the new-item split, missing modalities, sampling.

Host-side numpy, except `device_sampling` (the same epoch sampler in JAX,
run inside the jitted epoch). `load_dataset(config)` runs the whole pipeline
and returns a `Dataset`; `epoch_triples` and `sample_negatives` feed training.

Modules, each of one concern (none imports anything outside milk_jax/data/
but milk_jax.errors):
  errors.py          DataError, the package's one exception type
  files.py           checked reads: .npy arrays, UTF-8 text and its lines, TSV tables
  features.py        feature files, rows marking a missing modality, declared availability
  layouts/           RawData and one reader per on-disk layout: interactions, mmrec, milk
  synthetic.py       the generated catalogue of config.data.format='synthetic'
  ids.py             raw ids -> dense indices, and the text of an id map
  split.py           the new-item split (random or by first interaction time)
  missing.py         availability masks of each setting, imputation, L2 normalisation
  dataset.py         the Dataset container, the config checks and `load_dataset`
  sampling.py        negatives and an epoch's triples on the host; steps per epoch
  device_sampling.py the same epoch, drawn on the device
"""

from milk_jax.data.dataset import Dataset
from milk_jax.data.dataset import load_dataset
from milk_jax.data.errors import DataError
from milk_jax.data.sampling import epoch_triples
from milk_jax.data.sampling import sample_negatives

__all__ = ['DataError', 'Dataset', 'load_dataset', 'sample_negatives', 'epoch_triples']
