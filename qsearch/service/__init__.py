"""The service layer: the study registry and the worker processes that run trials."""
