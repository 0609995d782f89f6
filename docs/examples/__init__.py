"""Code examples of the documentation; tests/unit/test_docs_examples.py runs each one."""
