"""Loading units from the store in batches: two queries per chunk of ids, the same units that were written.

Real tau-bench airline runs are written and read back on SQLite and PostgreSQL: every unit equals
the one ingested (spans in time order, each validated from its stored JSON), in the order asked
for, duplicates and chunk boundaries included; an unknown id is an error, not a silent gap.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assay._store import Store
from assay._store.store import IN_CHUNK
from assay.exceptions import NotFoundError
from assay.traces import Unit
from assay.traces.readers import read_file
from tests.test_selection import store_url  # noqa: F401  (the SQLite / PostgreSQL fixture)

from .conftest import AIRLINE


@pytest.fixture(scope="module")
def runs() -> list[Unit]:
    return sorted(read_file(AIRLINE).units, key=lambda u: u.unit_id)


@pytest.fixture
def store(store_url: str, runs: list[Unit]) -> Iterator[Store]:  # noqa: F811
    store = Store(store_url)
    store.add_units(runs)
    yield store
    store.close()


def _in_time_order(unit: Unit) -> Unit:
    return unit.model_copy(update={"spans": tuple(sorted(unit.spans, key=lambda s: s.start_ns))})


def test_units_read_back_equal_what_was_written(store: Store, runs: list[Unit]) -> None:
    ids = [u.unit_id for u in runs]
    asked = list(reversed(ids)) * 3  # 600 ids: past one chunk, every unit three times, in another order
    assert len(asked) > IN_CHUNK
    got = store.units(asked)
    by_id = {u.unit_id: _in_time_order(u) for u in runs}
    assert [u.unit_id for u in got] == asked
    assert all(u == by_id[u.unit_id] for u in got)
    assert store.unit(ids[7]) == by_id[ids[7]]


def test_an_unknown_unit_is_an_error(store: Store, runs: list[Unit]) -> None:
    with pytest.raises(NotFoundError, match="no-such-unit"):
        store.units([runs[0].unit_id, "no-such-unit"])
    with pytest.raises(NotFoundError):
        store.unit("no-such-unit")
    assert store.units([]) == []
