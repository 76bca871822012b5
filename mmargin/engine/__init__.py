"""The minimal-flip search engine: the only place in mmargin that searches."""
