"""Shared by every Python test: the model package and the test helpers on sys.path."""

import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TESTS, "..", "model"))
sys.path.insert(0, TESTS)
