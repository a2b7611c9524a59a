"""Build the fused quantizer kernels ahead of their first use: `python -m qsearch.quant`."""

import logging
import sys

from qsearch.quant import fused

logging.basicConfig(level=logging.INFO, format="%(message)s")
if not fused.available():
    sys.exit(f"fused quantizer kernels unavailable: {fused.unavailable_reason()}")
print(f"fused quantizer kernels ready in {fused.cache_dir()}")
