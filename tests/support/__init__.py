"""What tests share, and no tests: fixtures, helpers that start or drive real services,
and builders of test data. Test modules import from here and never from each other
(tests/test_code_layout.py checks it)."""
