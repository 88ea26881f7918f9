"""Fake of AUTOMATIC1111 v1.10.1's ``modules`` package for tests (A1111_CONTRACT.md §15)."""
