"""Text plugin for mmargin: fewest word / character edits and embedding-space margins.

``mmargin_text.spaces`` (word and character substitution), ``mmargin_text.embedding``
(input-embedding L2 margins), ``mmargin_text.adapters`` (word CNN, Hugging Face, black
box), ``mmargin_text.data`` (MR, CSV / JSONL), ``mmargin_text.textattack_bridge``
(TextAttack transformations and constraints, offline). Importing this
package imports nothing heavy.
"""
