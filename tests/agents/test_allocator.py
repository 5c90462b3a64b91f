"""allocator.reuse_freed_memory: freed blocks are reused without page faults inside the block."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

_PROBE = """
import json, resource, torch
from llmenv.agents.allocator import reuse_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(64 * 2**18)  # 64 MiB of float32, written once, then freed
    block.fill_(1.0)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = [faults() for _ in range(4)]
with reuse_freed_memory() as enabled:
    inside = [faults() for _ in range(8)]
print(json.dumps({"outside": outside, "inside": inside, "enabled": enabled}))
"""


def test_a_freed_block_is_reused_inside_without_page_faults():
    # a fresh interpreter, so that no earlier test's freed heap serves the blocks
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    pages = 64 * 2**20 // 4096
    assert counts["enabled"]
    assert min(counts["outside"]) > pages // 2  # glibc's default: every block is a fresh mmap, faulted in again
    assert max(counts["inside"][-4:]) < pages // 10  # once the heap has grown to fit, its pages serve again
