"""asv benchmarks of rulelab's catalog: naive against custom-rule variants, on every backend.

The suites are generated from the catalog (``rulelab.cases()``): one benchmark class per
case, named after it, so a new case is benchmarked with no edit here. See README.md.
"""

import os

# Before any backend starts: a GPU backend must not grab most of the device's memory
# up front, or memory-bound benchmarks would measure the allocator's reservation.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
