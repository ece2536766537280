"""Checkpoint stage: fetch raw weights, convert them to timm-keyed safetensors, load models.

The stage runs in three steps, each in its own module:

- ``fetch.fetch_weights`` downloads or copies the raw weights file named by a model's
  ``weights:`` mapping and verifies its sha256.
- ``convert.convert_checkpoint`` loads the raw file without running pickled code, maps its
  keys onto timm's with an adapter from ``adapters.ADAPTERS``, checks every key and shape,
  and writes a safetensors file plus a provenance record.
- ``load.load_model`` builds the timm model and loads that safetensors file strictly.

A format whose models need a head that timm lacks (the model-soups CLIP ingredients) gets it
from ``heads``; the safetensors metadata records the head, so every loader builds the same model.

The submodules are imported explicitly because ``fetch`` does not need torch.
"""
