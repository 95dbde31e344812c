"""Reading pickled numpy data that someone else wrote, without letting the file run code.

A pickle names the callables that rebuild its objects; an ordinary ``pickle.load`` imports and
calls whatever it names (``os.system`` included). :class:`RestrictedUnpickler` admits only the few
globals that numpy array reconstruction and builtin containers need, and refuses anything else
with :class:`UnsafePickleError` naming the global and the file.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "UnsafePickleError", "safe_load", "safe_load_npy"]

# (module, name) pairs a numpy-array pickle legitimately references. numpy 2 moved ``numpy.core``
# to ``numpy._core``; Python-2 pickles name ``copy_reg`` (mapped to ``copyreg`` by fix_imports).
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copyreg", "_reconstructor"),
        # protocol-2 pickles written by Python 3 spell bytes (numpy's raw buffers) as encode(str, "latin1")
        ("_codecs", "encode"),
        ("builtins", "object"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("collections", "OrderedDict"),
    }
)

# copyreg._reconstructor(cls, base, state) calls base.__new__(cls): harmless only for these classes.
_RECONSTRUCTABLE = {("numpy", "ndarray"), ("builtins", "object"), ("builtins", "dict"), ("builtins", "list")}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`.

    :param file: a binary file object.
    :param source: a name for error messages (the file's path).
    :param encoding: how to decode Python-2 ``str`` objects (``"latin1"`` for Python-2 numpy pickles).
    """

    def __init__(self, file: Any, *, source: str = "<pickle>", encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding, fix_imports=True)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name}; only numpy arrays and builtin "
                f"containers are allowed in this file (a pickle can run arbitrary code when loaded)"
            )
        obj = super().find_class(module, name)
        if (module, name) == ("copyreg", "_reconstructor"):
            return _checked_reconstructor(obj, self.source)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing a persistent id {pid!r}; plain data pickles have none")


def _checked_reconstructor(reconstructor: Any, source: str) -> Any:
    def call(cls: type, base: type, state: Any) -> Any:
        for klass in (cls, base):
            if (klass.__module__, klass.__qualname__) not in _RECONSTRUCTABLE:
                raise UnsafePickleError(f"{source}: refusing to reconstruct {klass.__module__}.{klass.__qualname__}")
        return reconstructor(cls, base, state)

    return call


def safe_load(file: str | os.PathLike[str] | bytes, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``file`` (a path, or the pickle's bytes) with :class:`RestrictedUnpickler`.

    Raises :class:`UnsafePickleError` for a disallowed global and :class:`pickle.UnpicklingError`
    (naming the file) for a truncated or corrupt pickle.
    """
    if isinstance(file, bytes):
        data, source = file, "<bytes>"
    else:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"no pickle file at {path}")
        data, source = path.read_bytes(), str(path)
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise pickle.UnpicklingError(f"{source}: not a readable numpy pickle ({type(err).__name__}: {err})") from err


def safe_load_npy(file: str | os.PathLike[str], *, encoding: str = "ASCII") -> Any:
    """Read an ``.npy`` file holding an object array (``np.save`` of a dict, say) without ``allow_pickle``.

    ``np.load(allow_pickle=True)`` would unpickle the payload unrestricted; here the header is parsed
    with :mod:`numpy.lib.format` and the payload goes through :class:`RestrictedUnpickler`. A 0-d
    object array is unwrapped to the object it holds.
    """
    import numpy as np
    from numpy.lib import format as npy_format

    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"no .npy file at {path}")
    with open(path, "rb") as fh:
        try:
            version = npy_format.read_magic(fh)
            reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            _, _, dtype = reader(fh)
        except ValueError as err:
            raise pickle.UnpicklingError(f"{path}: not an .npy file ({err})") from err
        if not dtype.hasobject:
            raise pickle.UnpicklingError(f"{path}: holds a plain {dtype} array; read it with numpy.load")
        payload = fh.read()
    try:
        obj = RestrictedUnpickler(io.BytesIO(payload), source=str(path), encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise pickle.UnpicklingError(f"{path}: not a readable object .npy ({type(err).__name__}: {err})") from err
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.ndim == 0:
        return obj.item()
    return obj
