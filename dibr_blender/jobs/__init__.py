"""The work without Blender: no module here imports bpy or ``dibr_blender.scene``
(tests/test_layering_blender.py checks it). Plain arrays in (``records``), plain arrays out;
torch and dibr_core are imported inside the functions that need them."""
