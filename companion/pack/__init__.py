"""Sample packs and playable kits: a TOML spec checked field by field (``spec``), each sound rendered alone
into the exact bytes of its WAV (``render``), the pack folder with its resumable state and manifest
(``state``), SFZ and Decent Sampler kits (``kit``), the run itself with its progress and summary
(``runner``), and the same run on a Ray cluster (``ray_run``, the only module that imports Ray, lazily).
It may import ``companion.engine``, ``companion.config``, ``companion.output``, ``models`` and ``export``."""
