import os

# Qt runs headless in tests and CI.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
