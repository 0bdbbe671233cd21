"""params.yaml, the one source of parameters for DVC, the CLI and Kubeflow: reading and
editing the file (``files``), its typed schema (``schema``) and validation with messages
that name each bad key (``parse``)."""
