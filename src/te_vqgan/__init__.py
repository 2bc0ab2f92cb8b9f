"""te-vqgan: translation-equivariant image tokenization, the Hugging Face way."""

__version__ = "0.1.0"
