"""keep_freed_memory: freed buffers are reused instead of being faulted in again."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from keras_retinanet.utils.allocator import keep_freed_memory
    applied = keep_freed_memory()
    np.ones(1)  # NumPy's own start-up allocations before counting
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        buffer = np.ones(64 * 2**20 // 8)  # 64 MiB, over glibc's largest mmap threshold
        del buffer
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(applied, faults)
    """
)


def _run(**environment):
    env = dict(os.environ, **environment)
    env.pop("LD_PRELOAD", None)
    output = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True).stdout
    applied, faults = output.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    applied, faults = _run()
    system_applied, system_faults = _run(KERAS_RETINANET_MALLOC="system")
    assert applied and not system_applied
    # glibc's defaults: every 64 MiB buffer is a fresh mmap whose pages are faulted in (and
    # zeroed by the kernel) each time; kept, the first buffer's pages are faulted in once,
    # then reused (the page size, 4 KiB or transparent huge pages, changes both counts alike)
    assert system_faults > 8 * faults


def test_a_mistyped_setting_is_an_error_not_ignored():
    from keras_retinanet.errors import SettingError
    from keras_retinanet.utils import allocator

    assert allocator.setting({}) == "keep"
    assert allocator.setting({"KERAS_RETINANET_MALLOC": " System "}) == "system"
    with pytest.raises(SettingError, match=r"KERAS_RETINANET_MALLOC='sytem' is not a setting: use 'system'"):
        allocator.setting({"KERAS_RETINANET_MALLOC": "sytem"})
