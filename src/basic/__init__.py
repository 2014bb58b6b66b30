"""BASIC reproduction suite: LLaVA-1.5 training with direction (DAS) and distribution (SDS) supervision
of the visual projector by the LLM's own shallow-layer embeddings (ICCV 2025, arXiv 2508.06895)."""

__version__ = "0.1.0"
