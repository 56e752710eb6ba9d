"""Tests marked ``vllm`` build in-process vLLM engines, which change process-wide state
(``torch.set_num_threads`` becomes a no-op, ``torch.distributed`` is initialised, memory is bound
to a NUMA node). In a run that also selects other tests they are skipped with that reason; run
them in a pytest process of their own: ``python -m pytest -m vllm`` (``.ci/run`` does)."""

import pytest

REASON = ("vLLM tests run in a pytest process of their own (vLLM changes process-wide torch "
          "state): python -m pytest -m vllm")


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected what they deselect
def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("vllm") is not None]
    if marked and len(marked) < len(items):
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=REASON))
