"""The narrated sample corpus: synthetic instructional videos with speech, captions and held-out benchmarks.

Modules, from the bottom up: :mod:`.video` (frames and encoding), :mod:`.captions` (caption files),
:mod:`.speech` (espeak-ng narration), :mod:`.config` (the corpus config and its presets), :mod:`.plan` (what
every video shows and says), :mod:`.corpus` (writing it all), :mod:`.cli` (``mcn sample-data``).
Needs the ``sample`` extra: ``pip install 'mcn[sample]'``.
"""
