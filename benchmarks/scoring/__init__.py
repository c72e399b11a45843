"""Scoring predictions: the metrics, the pose and position searches over reference tables, and the evaluation of rows."""
