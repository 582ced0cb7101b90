"""The engine: one worker thread owns the loaded model and everyone else submits to it. It holds what
can be asked (``requests``), the check of a request against the model and parameters (``validate``),
jobs and their queue (``jobs``, ``jobbook``), rendering and writing one batch (``render``), the worker
itself (``engine``), the pre-render pool (``pool``), and which runtime loads a model file
(``model_files``). It may import ``companion.config``, ``companion.output``, ``models`` and ``export``."""
