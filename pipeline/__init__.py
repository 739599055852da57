"""The Ray feature-extraction job (``mcn extract``) and the store tools (``mcn store``).

Modules, in the order a job uses them: :mod:`.config` (typed job config and presets), :mod:`.inputs` (folder or
manifest -> validated video items), :mod:`.stages` (the Ray stages: decode tasks, model actor pools, ASR),
:mod:`.writer` (store layout, shards, failures, resume state), :mod:`.job` (the driver loop), :mod:`.cli` and
:mod:`.store_cli` (entry points).
"""
