"""membershield: can someone tell, from this model, whether a record was in its training set?"""

from membershield.errors import ConfigError, InputDataError, MembershieldError, ModelLoadError

__version__ = "0.1.0"

__all__ = ["ConfigError", "InputDataError", "MembershieldError", "ModelLoadError", "__version__"]
