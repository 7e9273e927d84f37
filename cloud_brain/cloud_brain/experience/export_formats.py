"""The export formats by name, each a module with `write(out, store, selection, layout, events)`.

Apart from `export.py` (the selection, the joint layout and the events every format shares), so the
formats import `export` and nothing imports back: a new format is one module and one entry here.
"""


def formats() -> dict:
    """Format name -> writer module (imported lazily: pyarrow and mcap load only when used)."""
    from cloud_brain.experience import export_mcap, export_parquet

    return {"mcap": export_mcap, "parquet": export_parquet}
