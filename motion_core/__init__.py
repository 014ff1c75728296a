"""Motion Inversion core: plain torch + diffusers, no ComfyUI.

Learn motion embeddings from one reference clip (:mod:`.training`), store them (:mod:`.embedding_file`) and
generate new clips that move the same way (:mod:`.sampling`). Modules import each other relatively so the
package works both as top-level ``motion_core`` (command line, tests) and inside the ComfyUI node pack.
"""

__version__ = "0.1.0"
