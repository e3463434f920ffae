"""The one exception type of the data package."""

from milk_jax.errors import UserError


class DataError(UserError, ValueError):
  """Bad input data or data config; the message names the file or field and the problem.

  A ValueError subclass so callers that guard against bad values in general
  still catch it.
  """
