"""Training: shared infrastructure in _common.py; each family's recipe lives with the family."""
