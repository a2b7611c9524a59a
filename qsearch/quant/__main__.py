"""Build the fused quantizer kernels ahead of their first use: `python -m qsearch.quant`."""

import logging
import sys

from qsearch.quant import fused

logging.basicConfig(level=logging.INFO, format="%(message)s")
if fused.turned_off():
    print(f"fused quantizer kernels turned off by {fused.DISABLE_ENV}")
elif not fused.available():
    sys.exit(f"fused quantizer kernels unavailable: {fused.unavailable_reason()}")
else:
    print(f"fused quantizer kernels ready in {fused.cache_dir()}")
