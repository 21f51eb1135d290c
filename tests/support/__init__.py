"""What the tests share besides fixtures: tests/conftest.py holds the fixtures and hooks and
imports from here, and test modules import from here (`from support.data import MALL_CSV`).
pytest puts tests/ on sys.path (`pythonpath` in pyproject.toml)."""
