"""Site specs are validated as a whole, with errors naming file, key and problem."""

from __future__ import annotations

import pytest

from omop_etl.errors import EtlError
from omop_etl.spec import available_sites, load_spec

VALID = """
site: demo_a
id_block: 2
value_maps:
  sex: {M: 8507}
files:
  - name: patients
    pattern: "pat*.csv"
    target: person
    columns:
      person_source_value: id
      birth_datetime: {column: dob, format: "%Y%m%d"}
      gender_concept_id: {column: sex, map: sex, default: 0}
  - name: labs
    pattern: labs.tsv
    delimiter: "\\t"
    target: event
    domain: Measurement
    type_concept_id: 32817
    columns:
      person_source_value: pid
      code: test
      code_system: {const: LOINC}
      start_datetime: {column: drawn, format: datetime}
      value_as_number: {sql: "replace(result, ',', '.')"}
"""


def _write(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_spec_loads(tmp_path):
    spec = load_spec(_write(tmp_path, "demo_a", VALID))
    assert spec.site == "demo_a"
    assert spec.id_base == 2 << 27
    assert [f.name for f in spec.files] == ["patients", "labs"]
    labs = spec.files[1]
    assert labs.read["delimiter"] == "\t"
    assert {c.field: c.const for c in labs.columns if c.const is not None} == {
        "code_system": "LOINC",
        "default_domain": "Measurement",
        "type_concept_id": 32817,
    }


def test_the_bundled_synthea_spec_is_valid():
    assert "synthea" in available_sites()
    spec = load_spec("synthea")
    assert spec.id_block == 1
    assert {f.name for f in spec.files if f.skip} == {"claims", "payers", "patient_expenses"}


def test_every_problem_is_reported_with_file_and_key(tmp_path):
    broken = (
        VALID.replace("id_block: 2", "id_block: 99")
        .replace("map: sex", "map: gender")
        .replace("code: test", "cod: test")
        .replace("domain: Measurement", "domain: Lab")
        .replace("    pattern: labs.tsv\n", "    pattern: labs.tsv\n    colour: red\n")
    )
    path = _write(tmp_path, "demo_a", broken)
    with pytest.raises(EtlError) as err:
        load_spec(path)
    message = str(err.value)
    assert "has 6 problem(s)" in message
    for expected in (
        "id_block: 99 is outside 1..15",
        "files[0] (patients).columns.gender_concept_id.map: no value map named 'gender'",
        "files[1] (labs).colour: unknown key",
        "files[1] (labs).columns.cod: 'event' has no staging field 'cod'",
        "files[1] (labs).columns: required staging field 'code' is not mapped",
        "files[1] (labs).domain: only for target event, one of",
    ):
        assert f"{path}: {expected}" in message


def test_site_name_must_match_the_file_name(tmp_path):
    path = _write(tmp_path, "other", VALID)
    with pytest.raises(EtlError, match="site: 'demo_a' must equal the file name 'other'"):
        load_spec(path)


def test_an_unknown_site_lists_the_known_ones():
    with pytest.raises(EtlError, match=r"no site spec named 'nosuch' .*known: .*synthea"):
        load_spec("nosuch")


def test_not_yaml_is_one_clear_error(tmp_path):
    with pytest.raises(EtlError, match="not valid YAML"):
        load_spec(_write(tmp_path, "bad", "site: [unclosed"))


def test_unsupported_encoding_is_refused_before_running(tmp_path):
    text = VALID.replace('    delimiter: "\\t"\n', '    delimiter: "\\t"\n    encoding: utf-16\n')
    with pytest.raises(EtlError, match=r"files\[1\] \(labs\)\.encoding: 'utf-16' is not one of"):
        load_spec(_write(tmp_path, "demo_a", text))


def test_every_bundled_site_spec_is_valid():
    sites = available_sites()
    assert {"seoul_general", "busan_university", "incheon_medical", "daegu_fhir"} < set(sites)
    for site in sites:
        assert load_spec(site).site == site


def test_new_dialect_keys_are_checked(tmp_path):
    text = (
        VALID.replace("id_block: 2\n", "id_block: 2\nbatches: weekly\nmax_reject_rate: 5\n")
        .replace("      code: test\n", "      code: {column: test, transform: upper(test)}\n")
        .replace("      person_source_value: pid\n", "      person_source_value: {json: $.id}\n")
    )
    with pytest.raises(EtlError) as caught:
        load_spec(_write(tmp_path, "demo_a", text))
    message = str(caught.value)
    assert "batches: 'weekly' is not one of ['incremental', 'snapshot']" in message
    assert "max_reject_rate: expected a fraction from 0 to 1" in message
    assert "columns.code.transform: a SQL expression over {value}" in message
    assert "(labs).columns.person_source_value.json: json paths are for format ndjson only" in (
        message
    )
