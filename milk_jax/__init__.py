"""milk-jax: MILK (Bai et al., SIGIR 2024) for new-item recommendation under missing modalities.

  import milk_jax
  run = milk_jax.load('runs/default')  # A trained run folder (python main.py ... --workdir).
"""

__version__ = '0.1.0'


def load(run_dir: str):
  """The trained run in `run_dir` as a `milk_jax.api.Run` (item_vectors, recommend, config)."""
  from milk_jax import api  # Imported on use: `import milk_jax` stays light.
  return api.load(run_dir)
