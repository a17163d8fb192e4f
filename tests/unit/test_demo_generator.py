"""The synthetic five-hospital export (omop_etl.demo): determinism, formats, planted defects.

The defect test reads every file back the way a careful reader would and recounts each
kind of defect from the data alone; the counts must equal the manifest's, so a planted
row that broke two rules (or a clean row that broke one) would show.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omop_etl.demo import catalogue as cat
from omop_etl.demo.generate import BATCHES, SITES, generate, main

ROOT = Path(__file__).resolve().parents[2]
VOCABULARY = ROOT / "mappings" / "vocabulary" / "demo"
CODEMAPS = ROOT / "mappings" / "codemaps"
PATIENTS = 50
SEED = 7


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_export")
    return out, generate(out, PATIENTS, SEED)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(export, tmp_path):
    out, manifest = export
    again = generate(tmp_path / "again", PATIENTS, SEED)
    assert again == manifest
    first, second = _files(out), _files(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    generate(tmp_path / "other", PATIENTS, SEED + 1)
    other = _files(tmp_path / "other")
    assert other.keys() == first.keys()
    changed = [name for name in first if first[name] != other[name]]
    assert len(changed) >= len(first) - 4  # (a batch may have e.g. no Device rows at all)


def test_manifest_labels_the_data_synthetic_and_lists_every_file(export):
    out, manifest = export
    assert manifest["synthetic"] is True
    assert "synthetic" in manifest["note"].lower()
    assert manifest["generator"] == "omop_etl.demo.generate"
    assert (manifest["seed"], manifest["patients"]) == (SEED, PATIENTS)
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert "SYNTHETIC" in (out / "README.txt").read_text(encoding="utf-8")
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    listed = {"manifest.json", "README.txt"}
    for site, info in manifest["sites"].items():
        assert set(info["batches"]) == set(BATCHES)
        for batch, b in info["batches"].items():
            for name, f in b["files"].items():
                listed.add(f"{site}/{batch}/{name}")
                assert _record_count(out / site / batch / name, site) == f["rows"], name
    assert written == listed


def _record_count(path: Path, site: str) -> int:
    if path.suffix == ".parquet":
        return pq.read_metadata(path).num_rows
    if path.suffix == ".ndjson":
        return path.read_bytes().count(b"\n")
    return len(_read_delimited(path, site)[1])


# --- reading the exports back ------------------------------------------------------------

SPECS = {
    "seoul_general": {
        "patients": ("patients.csv", "patient_no", "death_date"),
        "visits": ("visits.csv", "visit_no"),
        "events": {
            "diagnoses.csv": ("patient_no", "visit_no", "dx_date", "kcd_code", None, "note"),
            "prescriptions.csv": ("patient_no", "visit_no", "order_dt", "edi_code", None, None),
            "labs.csv": ("patient_no", "visit_no", "result_dt", "loinc", "result", "comment"),
            "procedures.csv": ("patient_no", "visit_no", "proc_date", "edi_code", None, None),
        },
        "formats": ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S"),
    },
    "busan_university": {
        "patients": ("patient.csv", "환자번호", "사망일자"),
        "visits": ("visit.csv", "내원번호"),
        "events": {
            "diagnosis.csv": ("환자번호", "내원번호", "진단일자", "상병코드", None, None),
            "prescription.csv": ("환자번호", "내원번호", "처방일자", "EDI코드", None, None),
            "lab.csv": ("환자번호", "내원번호", "검사일시", "검사코드", "결과", None),
            "procedure.csv": ("환자번호", "내원번호", "시술일자", "EDI코드", None, None),
        },
        "formats": ("%Y%m%d", "%Y%m%d%H%M%S"),
    },
    "gwangju_local": {
        "patients": ("pat.tsv", "pid", "death"),
        "visits": ("enc.tsv", "eid"),
        "events": {
            "dx.tsv": ("pid", "eid", "dx_dt", "kcd", None, None),
            "rx.tsv": ("pid", "eid", "rx_dt", "local_drug_code", None, None),
            "lab.tsv": ("pid", "eid", "lab_dt", "local_lab_code", "value", "remark"),
        },
        "formats": ("%Y/%m/%d", "%Y/%m/%d %H:%M"),
    },
    "incheon_medical": {
        "patients": ("patients.parquet", "patient_id", "death_date"),
        "visits": ("encounters.parquet", "encounter_id"),
        "events": {
            "events.parquet": ("patient_id", "encounter_id", "start_ts", "code", "value_num", None)
        },
    },
    "daegu_fhir": {
        "patients": ("Patient.ndjson", "id", "deceasedDateTime"),
        "visits": ("Encounter.ndjson", "id"),
        "events": {
            "Condition.ndjson": ("subject", "encounter", "onsetDateTime", "code", None, "note"),
            "Observation.ndjson": (
                "subject",
                "encounter",
                "effectiveDateTime",
                "code",
                "valueQuantity",
                None,
            ),
            "MedicationRequest.ndjson": (
                "subject",
                "encounter",
                "authoredOn",
                "medicationCodeableConcept",
                None,
                None,
            ),
            "MedicationAdministration.ndjson": (
                "subject",
                "context",
                "effectiveDateTime",
                "medicationCodeableConcept",
                None,
                None,
            ),
            "Procedure.ndjson": ("subject", "encounter", "performedDateTime", "code", None, None),
            "Immunization.ndjson": (
                "patient",
                "encounter",
                "occurrenceDateTime",
                "vaccineCode",
                None,
                None,
            ),
            "AllergyIntolerance.ndjson": ("patient", None, "recordedDate", "code", None, None),
            "Device.ndjson": ("patient", None, "manufactureDate", "type", None, None),
        },
        "formats": ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S+09:00"),
    },
}
IDENTIFIER_IN_TEXT = re.compile(r"01\d-\d{3,4}-\d{4}|\b\d{6}-\d{7}\b|[\w.]+@example\.(com|net|org)")


def _read_delimited(path: Path, site: str) -> tuple[list[str], list[list[str]]]:
    """Header and records of a CSV/TSV export; undecodable bytes become U+DCxx / U+FFFD."""
    data = path.read_bytes()
    if site == "seoul_general":
        assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with BOM"
        text = data[3:].decode("utf-8", "surrogateescape")
    elif site == "busan_university":
        text = data.decode("cp949", "replace")
    else:
        text = data.decode("utf-8", "surrogateescape")
    if site == "gwangju_local":
        assert "\r" not in text
        rows = [line.split("\t") for line in text.split("\n")[:-1]]
    else:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], rows[1:]


def _parse(raw, formats) -> datetime | str | None:
    """A start value as a datetime, 'sentinel' (year 1900 or 9999) or None (impossible)."""
    if isinstance(raw, datetime):
        value = raw
    else:
        for fmt in formats:
            try:
                value = datetime.strptime(raw, fmt)
                break
            except ValueError:
                continue
        else:
            return None
    return "sentinel" if value.year in (1900, 9999) else value


def _code(value) -> str:
    if isinstance(value, dict):
        return value["coding"][0]["code"]
    return value


def _ref(value) -> str:
    if isinstance(value, dict):
        return value["reference"].split("/", 1)[1]
    return value or ""


class Batch:
    """One batch of one site, read back: patient/visit ids and event records."""

    def __init__(self, folder: Path, site: str):
        spec = SPECS[site]
        self.site = site
        self.malformed: Counter = Counter()
        self.undecodable: Counter = Counter()
        self.patients = self._rows(folder / spec["patients"][0], spec["patients"][0])
        self.visits = self._rows(folder / spec["visits"][0], spec["visits"][0])
        self.events = {
            name: self._rows(folder / name, name)
            for name in spec["events"]
            if (folder / name).exists()
        }

    def _rows(self, path: Path, name: str) -> list[dict]:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        if path.suffix == ".ndjson":
            rows = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    self.malformed[name] += 1
            return rows
        if self.site == "busan_university":  # count the lines that are not CP949
            for line in path.read_bytes().split(b"\r\n")[1:]:
                try:
                    line.decode("cp949")
                except UnicodeDecodeError:
                    assert b"\xff" in line
                    self.undecodable[name] += 1
        header, records = _read_delimited(path, self.site)
        rows = []
        for record in records:
            if len(record) != len(header):
                self.malformed[name] += 1
                continue
            if any("\udcff" in field for field in record):
                self.undecodable[name] += 1
            rows.append(dict(zip(header, record, strict=True)))
        return rows


def _recount(out: Path, site: str) -> tuple[dict, list[str]]:
    """Every planted defect of a site, recounted from its files; and anything amiss."""
    spec = SPECS[site]
    formats = spec.get("formats", ())
    batches = {b: Batch(out / site / b, site) for b in BATCHES}
    pid_col, death_col = spec["patients"][1], spec["patients"][2]
    known_patients, deaths, known_visits = set(), {}, set()
    for b in BATCHES:  # batch 2 re-sends changed patients: its death dates win
        for row in batches[b].patients:
            known_patients.add(row[pid_col])
            death = row.get(death_col)
            if death:
                deaths[row[pid_col]] = death if isinstance(death, date) else _parse(death, formats)
        known_visits |= {row[spec["visits"][1]] for row in batches[b].visits}
    labs = {lab.loinc: lab for lab in cat.LABS}
    labs |= {lab.edi: lab for lab in cat.LABS} | {lab.local: lab for lab in cat.LABS}
    unmapped = set(cat.UNMAPPED.values()) | {cat.canonical_kcd(cat.UNMAPPED["KCD7"])}
    found: Counter = Counter()
    problems = []
    windows = {BATCHES[0]: (date(2018, 12, 1), date(2026, 1, 31))}
    windows[BATCHES[1]] = (date(2026, 2, 1), date(2026, 2, 28))
    for b, batch in batches.items():
        for name, n in batch.malformed.items():
            found[b, name, "malformed_row"] = n
        for name, n in batch.undecodable.items():
            found[b, name, "undecodable_bytes"] = n
        ids = Counter(row[pid_col] for row in batch.patients)
        found[b, spec["patients"][0], "duplicate_patient"] = sum(n - 1 for n in ids.values())
        for name, rows in batch.events.items():
            p_col, v_col, start_col, code_col, value_col, note_col = spec["events"][name]
            copies = Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)
            found[b, name, "duplicate_event"] = sum(n - 1 for n in copies.values())
            for row in rows:
                patient, visit = _ref(row.get(p_col)), _ref(row.get(v_col)) if v_col else ""
                start = _parse(row.get(start_col), formats)
                code = _code(row.get(code_col))
                if start is None:
                    found[b, name, "invalid_date"] += 1
                elif start == "sentinel":
                    found[b, name, "sentinel_date"] += 1
                else:
                    low, high = windows[b]
                    if not low <= start.date() <= high:
                        problems.append(f"{b}/{name}: {start} outside the batch")
                    death = deaths.get(patient)
                    death_day = death.date() if isinstance(death, datetime) else death
                    if death_day and start.date() > death_day + timedelta(days=60):
                        found[b, name, "event_after_death"] += 1
                    elif death_day and start.date() >= death_day:
                        problems.append(f"{b}/{name}: an event on {start} on or after {death}")
                if patient not in known_patients:
                    found[b, name, "orphan_patient"] += 1
                if visit and visit not in known_visits:
                    found[b, name, "orphan_visit"] += 1
                if code in unmapped:
                    found[b, name, "unmapped_code"] += 1
                if value_col and code in labs:
                    value = row[value_col]
                    value = value["value"] if isinstance(value, dict) else float(value)
                    if value > labs[code].plausible_high:
                        found[b, name, "implausible_value"] += 1
                if note_col:
                    note = row.get(note_col) or ""
                    note = note[0]["text"] if isinstance(note, list) else note
                    if IDENTIFIER_IN_TEXT.search(note):
                        found[b, name, "identifier_in_free_text"] += 1
    return {k: v for k, v in found.items() if v}, problems


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_planted_defect_is_in_the_files_exactly_as_the_manifest_says(export, site):
    out, manifest = export
    expected = {
        (d["batch"], d["file"], d["kind"]): d["count"]
        for d in manifest["defects"]
        if d["site"] == site
    }
    found, problems = _recount(out, site)
    assert problems == []
    assert found == expected
    kinds = {kind for _, _, kind in expected}
    assert "event_after_death" in kinds and "duplicate_event" in kinds and "orphan_visit" in kinds
    for d in manifest["defects"]:
        assert d["count"] >= 1
        assert d["detected_by"] in ("reject", "flag", "unmapped") or d["detected_by"].startswith(
            "dqd:"
        )
        if d["kind"] == "unmapped_code":
            assert sum(d["codes"].values()) == d["count"]


def test_busan_is_cp949_with_korean_headers_except_the_planted_lines(export):
    out, manifest = export
    for batch in BATCHES:
        folder = out / "busan_university" / batch
        data = (folder / "visit.csv").read_bytes()
        assert data.startswith("내원번호,환자번호".encode("cp949"))
        assert data.count(b"\r\n") == data.count(b"\n")  # CRLF
        for path in folder.iterdir():
            bad = [line for line in path.read_bytes().split(b"\r\n") if not _decodes(line, "cp949")]
            planted = sum(
                d["count"]
                for d in manifest["defects"]
                if (d["site"], d["batch"], d["file"], d["kind"])
                == ("busan_university", batch, path.name, "undecodable_bytes")
            )
            assert len(bad) == planted, path.name
    assert any(d["rule"] == "undecodable:cp949" for d in manifest["defects"])


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def test_seoul_writes_mixed_kcd_forms_and_multiline_notes(export):
    out, _ = export
    header, rows = _read_delimited(
        out / "seoul_general" / BATCHES[0] / "diagnoses.csv", "seoul_general"
    )
    data = (out / "seoul_general" / BATCHES[0] / "diagnoses.csv").read_bytes()
    assert data.count(b"\r\n") > 0
    codes = {r[2] for r in rows if len(r) == len(header)}
    assert any("." in c for c in codes) and any(c.isupper() and "." not in c for c in codes)
    assert any(c != c.upper() for c in codes)
    assert any("\n" in r[5] for r in rows if len(r) == len(header))


def test_fhir_lines_are_tagged_json_resources_except_the_planted_ones(export):
    out, manifest = export
    for batch in BATCHES:
        for path in (out / "daegu_fhir" / batch).iterdir():
            bad = 0
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                assert res["resourceType"] == path.stem
                assert res["meta"]["tag"][0]["code"] == "HTEST"
                if path.stem == "Patient":
                    assert res["identifier"][0]["system"] == "urn:oid:1.2.410.100.1"
                if path.stem == "Encounter":
                    assert res["period"]["start"].endswith("+09:00")
                    assert res["class"]["code"] in ("AMB", "IMP", "EMER")
            planted = sum(
                d["count"]
                for d in manifest["defects"]
                if (d["site"], d["batch"], d["file"]) == ("daegu_fhir", batch, path.name)
                and d["rule"] == "malformed_json"
            )
            assert bad == planted, path.name
    gaps = manifest["vocabulary_gaps"]
    assert {g["code_system"] for g in gaps} == {"CVX"}


def test_parquet_columns_are_typed_and_labelled_synthetic(export):
    out, _ = export
    folder = out / "incheon_medical" / BATCHES[0]
    events = pq.read_schema(folder / "events.parquet")
    assert events.field("start_ts").type == pa.timestamp("us")
    assert events.field("event_id").type == pa.int64()
    assert events.field("value_num").type == pa.float64()
    assert pq.read_schema(folder / "patients.parquet").field("birth_date").type == pa.date32()
    assert events.metadata[b"synthetic"] == b"true"
    kinds = set(pq.read_table(folder / "events.parquet").column("event_kind").to_pylist())
    assert kinds == {"diagnosis", "drug", "lab", "procedure"}


def test_batches_split_by_month_with_new_and_changed_patients_only_in_the_second(export):
    out, manifest = export
    for site in SITES:
        first, second = (Batch(out / site / b, site) for b in BATCHES)
        pid = SPECS[site]["patients"][1]
        before = {r[pid]: r for r in first.patients}
        again = [r for r in second.patients if r[pid] in before]
        new = [r for r in second.patients if r[pid] not in before]
        assert new, site
        # a patient sent again has changed (a death, a new phone), or is a planted duplicate
        changed = [r for r in again if r != before[r[pid]]]
        duplicates = sum(
            d["count"]
            for d in manifest["defects"]
            if (d["site"], d["batch"], d["kind"]) == (site, BATCHES[1], "duplicate_patient")
        )
        assert len(again) - len(changed) <= duplicates
        assert len(second.patients) < len(first.patients) / 2


def test_direct_identifiers_stay_in_the_patient_files(export):
    out, manifest = export
    identifiers = set(manifest["identifiers"])
    patient_ids = set()
    for site in SITES:
        spec = SPECS[site]
        for b in BATCHES:
            batch = Batch(out / site / b, site)
            for row in batch.patients:
                patient_ids.add(row[spec["patients"][1]])
                values = set(_leaves(row)) - {row[spec["patients"][1]]}
                assert values & identifiers, f"{site}: no identifier listed for a patient"
            for rows in [batch.visits, *batch.events.values()]:
                leaked = {v for r in rows for v in _leaves(r)} & identifiers
                leaked = {v for v in leaked if not _is_patient_id(v, site)}
                assert leaked == set(), site
    assert patient_ids <= identifiers
    assert any(re.fullmatch(r"\d{6}-[1-4]\d{6}", i) for i in identifiers)  # RRNs
    assert any("@example." in i for i in identifiers)


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, str):
        yield value.split("/", 1)[1] if value.startswith(("Patient/", "Encounter/")) else value


def _is_patient_id(value: str, site: str) -> bool:
    return bool(
        re.fullmatch(
            {
                "seoul_general": r"S\d{6}",
                "busan_university": r"\d{8}",
                "incheon_medical": r"IC\d{7}",
                "daegu_fhir": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",  # noqa: E501
                "gwangju_local": r"GJ\d{6}",
            }[site],
            value,
        )
    )


def test_rrns_fail_their_check_digit():
    from omop_etl.demo.generate import Rng, _rrn

    rng = Rng("rrn")
    for _ in range(200):
        rrn = _rrn(rng, date(1950 + rng.randrange(70), 1 + rng.randrange(12), 1), "F").replace(
            "-", ""
        )
        weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
        total = sum(int(c) * w for c, w in zip(rrn[:12], weights, strict=True))
        assert int(rrn[12]) != (11 - total % 11) % 10


def test_main_writes_the_export(tmp_path, capsys):
    assert main(["--patients", "3", "--seed", "1", "--out", str(tmp_path / "x")]) == 0
    assert "manifest.json" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["patients"] == 3


# --- the catalogue and its code maps ------------------------------------------------------


@pytest.fixture(scope="module")
def vocabulary() -> tuple[dict, dict, dict]:
    """Concepts by id and by (vocabulary, code); 'Maps to' targets by concept id."""
    by_id, by_code = {}, {}
    with (VOCABULARY / "CONCEPT.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["vocabulary_id"] != "Unknown":
                by_id[int(row["concept_id"])] = row
                by_code[row["vocabulary_id"], row["concept_code"]] = row
    maps_to: dict[int, list[int]] = {}
    with (VOCABULARY / "CONCEPT_RELATIONSHIP.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["relationship_id"] == "Maps to" and not row["invalid_reason"]:
                maps_to.setdefault(int(row["concept_id_1"]), []).append(int(row["concept_id_2"]))
    return by_id, by_code, maps_to


def _standard(concept: dict | None) -> bool:
    return bool(concept) and concept["standard_concept"] == "S" and not concept["invalid_reason"]


def _code_maps() -> dict[tuple[str, str], list[dict]]:
    maps: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(CODEMAPS.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames) == cat.CODEMAP_HEADER
            for row in reader:
                assert row["source_concept_id"] == "0" and row["invalid_reason"] == ""
                assert (row["valid_start_date"], row["valid_end_date"]) == (
                    "1970-01-01",
                    "2099-12-31",
                )
                maps.setdefault((row["source_vocabulary_id"], row["source_code"]), []).append(row)
    return maps


def test_code_map_files_are_the_ones_the_catalogue_generates():
    for name, rows in cat.code_map_rows().items():
        assert (CODEMAPS / name).read_text(encoding="utf-8") == cat.code_map_text(rows), name


def test_every_catalogue_code_resolves_to_a_standard_concept_of_its_domain(vocabulary):
    by_id, by_code, maps_to = vocabulary
    maps = _code_maps()

    def targets(vocabulary_id: str, code: str, domain: str) -> list[int]:
        rows = maps[vocabulary_id, code]
        ids = [int(r["target_concept_id"]) for r in rows]
        for concept_id, row in zip(ids, rows, strict=True):
            concept = by_id.get(concept_id)
            assert _standard(concept), (code, concept_id)
            assert concept["domain_id"] == domain, (code, concept["domain_id"])
            assert concept["vocabulary_id"] == row["target_vocabulary_id"]
        return ids

    def international(vocabulary_id: str, code: str) -> dict:
        concept = by_code.get((vocabulary_id, code))
        assert concept is not None, (vocabulary_id, code)
        if not _standard(concept):  # a source code then: it needs a valid 'Maps to'
            mapped = maps_to.get(int(concept["concept_id"]), [])
            assert mapped and all(_standard(by_id.get(c)) for c in mapped), code
            return by_id[mapped[0]]
        return concept

    two_targets = []
    for d in cat.DIAGNOSES:
        canonical = cat.canonical_kcd(d.kcd)
        assert canonical == canonical.upper() and "." not in canonical
        ids = targets("KCD7", canonical, d.domain)
        assert ids and sorted(ids) == sorted(d.targets)
        if len(ids) == 2:
            two_targets.append(d.kcd)
        fhir = international("SNOMED", d.snomed)
        assert int(fhir["concept_id"]) == (d.fhir_concept or d.targets[0])
        assert cat.FHIR_DISPLAY["SNOMED", d.snomed] == fhir["concept_name"]
    assert len(two_targets) == 1
    assert [d.domain for d in cat.DIAGNOSES if d.domain != "Condition"] == ["Observation"]
    assert len(cat.DIAGNOSES) >= 20
    for drug in cat.DRUGS:
        assert re.fullmatch(r"\d{9}", drug.edi) and re.fullmatch(r"GJD\d{4}", drug.local)
        assert targets("EDI", drug.edi, "Drug") == [drug.concept]
        assert targets("GWANGJU_DRUG", drug.local, "Drug") == [drug.concept]
        concept = international("RxNorm", drug.rxnorm)
        assert int(concept["concept_id"]) == drug.concept
        assert cat.FHIR_DISPLAY["RxNorm", drug.rxnorm] == concept["concept_name"]
    for proc in cat.PROCEDURES:
        assert re.fullmatch(r"[A-Z]{1,2}\d{3,4}", proc.edi)
        assert targets("EDI", proc.edi, "Procedure") == [proc.concept]
        assert int(international("SNOMED", proc.snomed)["concept_id"]) == proc.concept
    for lab in cat.LABS:
        assert re.fullmatch(r"GJL\d{4}", lab.local)
        assert targets("EDI", lab.edi, "Measurement") == [lab.concept]
        assert targets("GWANGJU_LAB", lab.local, "Measurement") == [lab.concept]
        assert int(international("LOINC", lab.loinc)["concept_id"]) == lab.concept
        unit = by_code.get(("UCUM", lab.unit))
        assert _standard(unit) and int(unit["concept_id"]) == lab.unit_concept, lab.unit
        assert lab.low < lab.high < lab.plausible_high < lab.implausible
        assert lab.low <= lab.mean <= lab.high * 1.2
    for coded, domain in [(cat.ALLERGIES, "Observation"), (cat.DEVICES, "Device")]:
        for item in coded:
            concept = international("SNOMED", item.code)
            assert int(concept["concept_id"]) == item.concept
            assert concept["domain_id"] == domain and concept["concept_name"] == item.name_en
    # CVX is a documented gap of the demo vocabulary: nothing of it is there
    assert set(cat.VOCABULARY_GAPS) == {"CVX"}
    assert not any(vocabulary_id == "CVX" for vocabulary_id, _ in by_code)
    assert all(i.concept == 0 for i in cat.IMMUNIZATIONS)


def test_planted_unmapped_codes_are_in_no_map_and_no_vocabulary(vocabulary):
    _, by_code, _ = vocabulary
    maps = _code_maps()
    mapped_codes = {code for _, code in maps}
    for code in cat.UNMAPPED.values():
        for form in (code, cat.canonical_kcd(code)):
            assert form not in mapped_codes
            assert not any(c == form for _, c in by_code), form
