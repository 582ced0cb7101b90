"""The ``dd-companion`` command line: the parser and the error policy (``main``) and one module per
command (``generate``, ``serve``, ``gui``, ``send``, ``devices``, ``models``, ``export``, ``train``).
The top of the companion: it may import every other part, and it is the only one that imports
``gui`` (in the ``gui`` command, lazily, so that the rest never needs Qt)."""
