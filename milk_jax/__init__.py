"""milk-jax: MILK (Bai et al., SIGIR 2024) for new-item recommendation under missing modalities."""

__version__ = '0.1.0'
