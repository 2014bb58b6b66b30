"""LLaVA-format data: conversation templates, the lazy dataset, label masking, image preprocessing, collator."""
