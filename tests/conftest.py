import atexit
import os
import shutil
import tempfile

# Qt runs headless in tests and CI.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# nothing may download (model hubs read this when they are imported)
os.environ["HF_HUB_OFFLINE"] = "1"
# traces the app stores between runs go to a throw-away folder, never the user's cache
os.environ["TORCHBUDGET_CACHE_DIR"] = tempfile.mkdtemp(prefix="torchbudget-test-traces-")
atexit.register(shutil.rmtree, os.environ["TORCHBUDGET_CACHE_DIR"], True)
