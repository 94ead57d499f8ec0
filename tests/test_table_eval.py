"""monge.table_eval's report: the table per run and the sentence that flags copied training rows."""

from __future__ import annotations

from monge.table_eval import COPY_MARGIN, copy_warning, format_table_quality


def _row(share: float, heldout: float = 0.05) -> dict[str, float]:
    return {"column_shapes": 0.9, "column_pair_trends": 0.95, "quality": 0.925, "c2st_auc": 0.6,
            "dcr_share": share, "dcr_heldout_share": heldout, "mle_f1_synth": 0.8}


def test_copies_are_named_with_their_settings_and_shares():
    rows = {"1": _row(0.04), "8": _row(0.30), "adaptive": _row(0.59)}
    text = copy_warning("wine", rows)
    assert text.startswith("**wine copies training rows** at 8, adaptive:")
    assert "59.0% of its samples at adaptive" in text and "(held-out rows: 5.0%)" in text


def test_no_warning_within_the_margin_of_the_held_out_share():
    assert copy_warning("wine", {"8": _row(0.05 + COPY_MARGIN), "1": _row(0.0)}) == ""


def test_report_holds_one_table_per_run_and_the_warning_under_it():
    text = format_table_quality({"fresh": {"8": _row(0.05)}, "copier": {"8": _row(0.5)}}, "Table quality")
    assert text.startswith("### Table quality")
    assert text.count("| setting |") == 2 and "mle_f1_synth" in text
    assert "**copier copies training rows** at 8" in text and "**fresh copies" not in text
    assert "| 8 | 0.900 | 0.950 | 0.925 |" in text
