"""The tabular gallery view: changed features in raw units with the schema's units, the
same table whether it comes from the run's recorded extras or is rebuilt from the rows."""

from __future__ import annotations

import numpy as np
import torch

from mmargin.plugin import SampleResult, Status
from mmargin_tabular.render import render_row
from mmargin_tabular.report import row_report
from mmargin_tabular.schema import Schema


def _result(adv: np.ndarray, extras: dict) -> SampleResult:
    return SampleResult(
        sample="<row>", modality="tabular", space="tabular", distance="tabular-l1", label=1,
        pred_label=1, adv_label=0, margin=1.0, lower_bound=None, verified=True, queries=1,
        seconds=0.0, status=Status.FLIPPED, strategy="test", extras=extras, adversarial=adv,
    )  # fmt: skip


def test_changed_features_in_raw_units_recorded_or_rebuilt(
    schema: Schema, test_rows: tuple[np.ndarray, np.ndarray]
) -> None:
    row = test_rows[0][0].astype(np.float64)
    adv = row.copy()
    columns = schema.columns
    amount, hour = columns.index("amount"), columns.index("hour")
    adv[amount] += 20.0
    adv[hour] = (adv[hour] + 3) % 24
    recorded = row_report(schema, torch.tensor(row[None]), torch.tensor(adv[None]))[0]
    from_extras = render_row(_result(adv, recorded), schema, None)
    rebuilt = render_row(_result(adv, {}), schema, row)
    assert from_extras is not None and rebuilt is not None
    assert from_extras == rebuilt
    assert f"total cost {recorded['cost']:.4g} points" in rebuilt
    assert "<td>amount</td>" in rebuilt and "<td>+$20</td>" in rebuilt
    assert f"<td>{int(row[hour])} h</td>" in rebuilt
    assert rebuilt.count("<tr>") == 1 + 2  # header + the two changed features
    assert render_row(_result(adv, {}), None, None) is None  # nothing to show it from
