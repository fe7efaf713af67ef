"""The Apache Spark engine: the same validation and the same feature SQL, on data beyond one machine.

Nothing here re-implements a feature, and the SQL fast path of validation only ever accepts rows
(rejections come from the embedded validator or the global steps named below):

* **Features**: the Spark DataFrames are registered as temp views named ``orders``, ``events`` and
  ``users`` and the query of :func:`features.pipeline.feature_queries` (written once, DuckDB dialect)
  runs on them after SQLGlot transpiles it (:func:`features.spark.feature_sql.transpile_for_spark`).
  Collected results go through :func:`features.pipeline.finalize_features`, exactly like the DuckDB path.
* **Validation**: the rules are :func:`features.validation.validate_table`'s. Rows whose every cell is
  in a plain form both engines provably read alike, and that pass every rule, are typed by Spark SQL
  (:func:`features.spark.validation._fast_path`, no Python); every other row (all bad rows, and valid
  rows in unusual forms) is validated by ``validate_table`` itself inside ``mapInPandas``, so reasons
  are always its own. The rules that need every row at once run as global Spark steps: duplicate
  ``order_id`` / ``user_id`` (the first in file order is kept, as in pandas) and events/orders of users
  missing from ``users``. Every row is accounted for: ``rows_in == accepted + rejected``, with the same
  reasons as the embedded path, and :meth:`features.spark.validation.SparkValidationReport.write_rejects`
  writes the embedded path's files.

Spark timestamps are UTC: the session time zone is forced to ``UTC`` (``MONTH()`` and day numbers
depend on it), and collected timestamps are tz-aware UTC.

The modules, each importing only those above it:

* :mod:`features.spark.session`: the SparkSession (:func:`~features.spark.session.spark_session`, the
  settings Strata always applies) and :class:`~features.spark.session.SparkEngineError`.
* :mod:`features.spark.frames`: :class:`~features.spark.frames.SparkDataset` (the typed contract tables)
  and conversions between pandas and Spark.
* :mod:`features.spark.reading`: finding the input tables on any Hadoop file system, reading them as raw
  strings, and the row numbers of rejected rows.
* :mod:`features.spark.feature_sql`: the feature SQL transpiled for Spark; building, collecting and
  writing the feature frame.
* :mod:`features.spark.validation`: validation on Spark (SQL fast path, ``validate_table`` in
  ``mapInPandas``, global steps) and :func:`~features.spark.validation.load_dataset_spark`.
* :mod:`features.spark.runs`: the entry points (``strata features --engine spark``, ``strata sample``)
  and whole-user sampling.

Everything imports ``pyspark`` lazily, so ``features`` stays importable without it.
"""
