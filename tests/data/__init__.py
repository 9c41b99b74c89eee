"""Tests of mlengine.data: the warehouse, BigQuery functions and dataset tables."""
