"""UMAF: read capabilities out of language models as 512-D fingerprints and turn them into LoRA adapters."""

__version__ = "0.1.0"
