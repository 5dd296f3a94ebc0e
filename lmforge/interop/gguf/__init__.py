"""GGUF interop: lmforge models <-> the single-file format of llama.cpp, Ollama and LM Studio.

    >>> import lmforge
    >>> lmforge.export_gguf("runs/my-model", "my-model.gguf", outtype="q8_0")    # doctest: +SKIP
    >>> lmforge.import_gguf("tinyllama.Q4_K_M.gguf", "runs/tinyllama")           # doctest: +SKIP
    >>> lmforge.load("my-model.gguf").generate("Hello")                          # doctest: +SKIP

`tables.py` holds the key tables and metadata keys per architecture (llama, gpt2), `quants.py`
the tensor types, `vocab.py` the tokenizer metadata, `files.py` the reading and writing.
"""

from .files import export_gguf, import_gguf, is_gguf_file, read_gguf, write_gguf
from .quants import OUTTYPES

__all__ = ["OUTTYPES", "export_gguf", "import_gguf", "is_gguf_file", "read_gguf", "write_gguf"]
