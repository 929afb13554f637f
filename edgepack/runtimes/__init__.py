"""Runtimes: one module per target format, each declaring ``RUNTIME = Runtime(...)`` (edgepack.registry).

A runtime names its device runner (``device_runners/<runner>``), what ``bench --install-runtime`` installs on a
device, how ``doctor`` judges a device, and the bench flags its runner takes. Registered here, once, in order.
"""

RUNTIME_MODULES = ("onnxruntime", "litert", "coreml", "executorch")
