"""Data: reading the layouts, the new-item split, missing modalities, sampling.

Host-side numpy, except `device_sampling` (the same epoch sampler in JAX,
run inside the jitted epoch). `load_dataset(config)` runs the whole pipeline
and returns a `Dataset`; `epoch_triples` and `sample_negatives` feed training.
"""

from milk_jax.data.dataset import Dataset
from milk_jax.data.dataset import load_dataset
from milk_jax.data.errors import DataError
from milk_jax.data.sampling import epoch_triples
from milk_jax.data.sampling import sample_negatives

__all__ = ['DataError', 'Dataset', 'load_dataset', 'sample_negatives', 'epoch_triples']
