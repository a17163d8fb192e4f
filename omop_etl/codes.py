"""Canonical forms of source codes, applied alike to export rows and to code maps.

Some code systems are written several ways: a KCD-7 diagnosis is ``E11.9``,
``E119`` or ``e11.9`` depending on the hospital system. Codes of these systems
are compared in one canonical form, so a code map written either way matches
every spelling in an export.
"""

from __future__ import annotations

from omop_etl.sql import literal

# code system (source vocabulary id) -> SQL template of its canonical form
NORMAL_FORMS = {
    # Korean Standard Classification of Diseases: upper case, no dot, no spaces
    "KCD7": "upper(replace(replace(trim({code}), '.', ''), ' ', ''))",
    # Korean EDI drug / procedure / lab fee codes: upper case, no surrounding spaces
    "EDI": "upper(trim({code}))",
}


def normalized_sql(code: str, system: str) -> str:
    """SQL giving ``code`` (an expression) in the canonical form of ``system`` (an expression).

    >>> normalized_sql("c", "s")[:28]
    "case s when 'KCD7' then uppe"
    """
    whens = " ".join(
        f"when {literal(name)} then {form.format(code=code)}" for name, form in NORMAL_FORMS.items()
    )
    return f"case {system} {whens} else {code} end"


def canonical_systems_sql() -> str:
    """The code systems that have a canonical form, as a SQL list.

    >>> canonical_systems_sql()
    "('KCD7', 'EDI')"
    """
    return "(" + ", ".join(literal(name) for name in NORMAL_FORMS) + ")"


def canonical_case_sql(code: str, system: str, indent: str = "") -> str:
    """A multi-line SQL CASE giving ``code`` in the canonical form of ``system`` (NULL for a
    system without one), for SQL files that match vocabulary codes in that form.

    ``transforms/sql/work/02_concept_lookup.sql`` holds this text, generated here and
    compared by a unit test, so NORMAL_FORMS stays the one owner of the forms.

    >>> print(canonical_case_sql("c.concept_code", "c.vocabulary_id"))
    case c.vocabulary_id
        when 'KCD7' then upper(replace(replace(trim(c.concept_code), '.', ''), ' ', ''))
        when 'EDI' then upper(trim(c.concept_code))
    end
    """
    whens = "".join(
        f"{indent}    when {literal(name)} then {form.format(code=code)}\n"
        for name, form in NORMAL_FORMS.items()
    )
    return f"case {system}\n{whens}{indent}end"
