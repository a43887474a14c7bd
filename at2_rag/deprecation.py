"""Old keyword names that keep working for one release, with a ``DeprecationWarning``."""

from __future__ import annotations

import functools
import warnings

from .errors import InvalidInputError


def renamed(**old_to_new: str):
    """Decorator: accept ``old=`` keywords as ``new=``, warning once per call; both at once is an error."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise InvalidInputError(f"{fn.__name__}: give {new}=, not both {new}= and {old}=")
                    warnings.warn(f"{fn.__qualname__}({old}=...) is deprecated; use {new}=...", DeprecationWarning,
                                  stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap
