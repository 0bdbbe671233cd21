"""The ``skinlesion`` command line, one module per command group; ``main`` assembles them
and ``options`` holds what every group shares (options, error handling)."""
