"""Data package: the Utah teapot patch file (installed as `render.assets`)."""
