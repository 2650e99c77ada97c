"""The Blender scene side (bpy): reading cameras, meshes and images into ``jobs.records`` and
writing results back as shape keys, colour attributes, textures and new objects."""
