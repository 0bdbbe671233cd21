"""Everything that happens to the data before a model sees it: reading a HAM10000 folder
(``catalog``), downloading it, validating it, the lesion-grouped split and its leakage
check, oversampling of the training part, exploratory analysis, data versions, publishing
to S3, storage helpers and the synthetic sets tests use."""
