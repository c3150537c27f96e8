"""A Spark session from params: ``local[*]`` on a laptop, any cluster through ``spark.master``.

Only scalar score tables go through Spark (docs/conventions.md, evaluation rules): a few dozen
columns per stamp, never pixels, so local defaults stay small: 2 GB of driver memory and 8
shuffle partitions (the default 200 makes a local aggregation of a few MB spend its time
scheduling tasks).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any


def spark_session(p: Mapping[str, Any] | None = None):
    """Get or create the session. ``p`` is the ``completeness.spark`` params section (checked, and
    its defaults filled in, by dhs.params.schema); ``conf`` passes any other ``spark.*`` setting
    through unchanged."""
    from dhs.params.schema import SPARK

    p = SPARK.check(p or {}, "completeness.spark", "params")
    # the executors must run the interpreter that runs this stage (the project's venv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if str(p["master"]).startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a local session needs no routable address
    import warnings

    # pyspark 4.x warns that it is not validated against pandas 3; the arrow paths used here are tested
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession

    b = (SparkSession.builder.master(str(p["master"])).appName(str(p["app_name"]))
         .config("spark.driver.memory", str(p["driver_memory"]))
         .config("spark.sql.shuffle.partitions", int(p["shuffle_partitions"]))
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.session.timeZone", "UTC"))
    for k, v in p["conf"].items():
        b = b.config(str(k), str(v))
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(str(p["log_level"]))
    return spark
