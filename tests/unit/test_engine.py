"""The embedded engine reads every record of a file, whatever a query does with it."""

from __future__ import annotations

from omop_etl.warehouse import connect_engine


def test_a_cast_of_a_csv_column_does_not_cost_the_record(tmp_path):
    path = tmp_path / "values.csv"
    path.write_text("id,value\n1,x\n2,3\n3,\n")
    con = connect_engine()
    rows = con.execute(
        f"select id, try_cast(value as double) from read_csv('{path}', header = true, "
        "auto_detect = false, columns = {'id': 'VARCHAR', 'value': 'VARCHAR'}, "
        "strict_mode = true, store_rejects = true) order by id"
    ).fetchall()
    assert rows == [("1", None), ("2", 3.0), ("3", None)]
