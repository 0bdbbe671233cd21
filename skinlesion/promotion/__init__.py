"""Moving the ``champion`` alias: the candidates of a run, the paired gate, MLflow registry
I/O under a lock, the change check that ends a scheduled run early, the reports folder
promotion reads and the upgrade of versions registered in an earlier form."""
