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


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _collect_qt_garbage_on_the_main_thread(request):
    """After a test with Qt widgets: collect its garbage here, on the main thread. A Qt object whose last
    Python reference a worker thread drops later is deleted by PySide in the middle of whatever the main
    thread does next, which was seen to deadlock in a paint event."""
    yield
    if "qtbot" in request.fixturenames:
        gc.collect()
