"""Model organisms: small models built here, offline, that show the behaviour SASA is about.

``sasa-organism`` (``sasa.zoo.organism``) is SmolLM2-135M-Instruct given text-only refusal by a
LoRA (``sasa.zoo.refusal``) and eyes by a from-scratch CLIP tower + LLaVA projector that reads
FigStep-style pages (``sasa.zoo.reader``), assembled as ``LlavaForConditionalGeneration``.
``sasa.data.pages.page_samples`` types requests on such pages; ``sasa.zoo.measure`` measures the organism.
"""
