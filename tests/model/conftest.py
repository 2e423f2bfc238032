import os
import sys

MODEL_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "model")
sys.path.insert(0, os.path.abspath(MODEL_DIR))
