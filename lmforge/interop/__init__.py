"""Interoperability with Hugging Face `transformers` checkpoints (GPT-2, Llama, BERT) and GGUF
files (llama.cpp, Ollama: Llama and GPT-2 kinds, the `gguf` subpackage).

    >>> import lmforge
    >>> lmforge.import_hf("hf/gpt2", "runs/gpt2")                # doctest: +SKIP
    >>> lmforge.export_hf("runs/my-model", "hf/my-model")        # doctest: +SKIP
    >>> lmforge.load("hf/gpt2").generate("Hello")                # either layout loads  # doctest: +SKIP

`keys.py` holds the key-table machinery, one module per architecture its table and config
mapping (`gpt2.py`, `llama.py`, `bert.py`), `hf.py` the directory reading and writing.
"""

from .gguf import export_gguf, import_gguf, is_gguf_file, read_gguf, write_gguf
from .hf import ARCHITECTURES, export_hf, import_hf, is_hf_dir, read_hf, write_hf

__all__ = ["ARCHITECTURES", "export_hf", "import_hf", "is_hf_dir", "read_hf", "write_hf", "export_gguf",
           "import_gguf", "is_gguf_file", "read_gguf", "write_gguf"]
