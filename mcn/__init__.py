"""mcn: learn a joint video-audio-text embedding space from raw narrated videos.

Subpackages, in the order data flows through them:
``mcn.extract`` (per-video decoding and features) -> ``mcn.pipeline`` (Ray job writing the store)
-> ``mcn.store`` (the store format) -> ``mcn.train`` (MCN model and trainer) -> ``mcn.eval`` (benchmarks, search).
``mcn.sample`` (the narrated sample corpus) stands apart: it imports none of them.
"""

__version__ = "0.1.0"
