"""The clinical catalogue the synthetic five-hospital export is drawn from.

Plain data: diagnoses, drugs, labs, procedures, immunizations, allergies and devices,
each with the codes every site writes for it, and the OMOP concept it maps to in the
bundled demo vocabulary (``mappings/vocabulary/demo``). Korean code systems (KCD-7,
EDI) and the Gwangju hospital's local codes are not in any OMOP vocabulary, so the
sites' code maps under ``mappings/codemaps/`` (``kcd7.csv``, ``edi.csv``,
``gwangju_local.csv``) are generated from this module by :func:`write_code_maps`;
``tests/unit/test_demo_generator.py`` checks that the files on disk match and that
every code resolves.

KCD-7 codes are the ICD-10-based Korean codes as clinicians write them (with the dot);
the code maps hold them in canonical form (upper case, no dot: ``E11.9`` -> ``E119``).
EDI codes have the shape of the Korean HIRA codes (9-digit drug product codes, 5-character
fee codes for procedures and lab tests) but are illustrative: they are not copied from
the HIRA master and may not name the same product or fee there. Local Gwangju codes
(``GJL0001``, ``GJD0001``) are invented. All international codes (SNOMED CT, LOINC,
RxNorm, UCUM) were looked up in the demo vocabulary; CVX is not in it (see
``VOCABULARY_GAPS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CODEMAP_HEADER = (
    "source_code",
    "source_concept_id",
    "source_vocabulary_id",
    "source_code_description",
    "target_concept_id",
    "target_vocabulary_id",
    "valid_start_date",
    "valid_end_date",
    "invalid_reason",
)
VALID_START = "1970-01-01"
VALID_END = "2099-12-31"


@dataclass(frozen=True)
class Diagnosis:
    key: str
    kcd: str  # as clinicians write it: "E11.9"
    name_ko: str
    name_en: str
    snomed: str  # the code the FHIR site sends
    targets: tuple[int, ...]  # standard concepts of the KCD-7 code (the code map's rows)
    domain: str = "Condition"  # domain of the targets
    fhir_concept: int = 0  # standard concept of `snomed` (0: same as targets[0])


@dataclass(frozen=True)
class Drug:
    key: str
    edi: str  # 9-digit EDI product code
    local: str  # Gwangju local drug code
    rxnorm: str
    concept: int
    name_en: str
    name_ko: str
    route: str  # oral | inhalation | intravenous | subcutaneous
    per_day: float  # units a day (tablets, vials, ...)
    days: tuple[int, ...]  # typical days' supply


@dataclass(frozen=True)
class Lab:
    key: str
    loinc: str
    concept: int
    edi: str  # EDI lab fee code (Busan)
    local: str  # Gwangju local lab code
    name_en: str
    name_ko: str
    unit: str  # UCUM code, as in the vocabulary's concept_code
    unit_concept: int
    low: float  # reference range
    high: float
    mean: float
    sd: float
    decimals: int
    plausible_high: float  # physiological limit: above it a value is implausible
    implausible: float  # the planted implausible value (> plausible_high)


@dataclass(frozen=True)
class Procedure:
    key: str
    edi: str  # EDI fee code
    snomed: str
    concept: int
    name_en: str
    name_ko: str


@dataclass(frozen=True)
class Coded:
    """A code of one international system (CVX, SNOMED) with its name and concept."""

    key: str
    code: str
    name_en: str
    concept: int  # 0 when the vocabulary lacks the code system


def _dx(key, kcd, ko, en, snomed, *targets, domain="Condition", fhir_concept=0) -> Diagnosis:
    return Diagnosis(key, kcd, ko, en, snomed, tuple(targets), domain, fhir_concept)


DIAGNOSES: tuple[Diagnosis, ...] = (
    # chronic
    _dx(
        "t2dm",
        "E11.9",
        "합병증을 동반하지 않은 2형 당뇨병",
        "Type 2 diabetes mellitus without complications",
        "44054006",
        201826,
    ),
    # one KCD-7 code, two standard concepts: type 2 diabetes + kidney disorder due to it
    _dx(
        "t2dm_kidney",
        "E11.2",
        "신장 합병증을 동반한 2형 당뇨병",
        "Type 2 diabetes mellitus with kidney complications",
        "127013003",
        201826,
        192279,
        fhir_concept=192279,
    ),
    _dx(
        "htn",
        "I10",
        "본태성(원발성) 고혈압",
        "Essential (primary) hypertension",
        "59621000",
        320128,
    ),
    _dx("hld", "E78.5", "상세불명의 고지질혈증", "Hyperlipidaemia unspecified", "55822004", 432867),
    _dx("ckd3", "N18.3", "만성 콩팥병(3기)", "Chronic kidney disease stage 3", "433144002", 443597),
    _dx(
        "afib",
        "I48.9",
        "상세불명의 심방세동 및 심방조동",
        "Atrial fibrillation and atrial flutter unspecified",
        "49436004",
        313217,
    ),
    _dx("hf", "I50.9", "상세불명의 심부전", "Heart failure unspecified", "84114007", 316139),
    _dx("cad", "I25.1", "죽상경화성 심장병", "Atherosclerotic heart disease", "53741008", 317576),
    _dx("asthma", "J45.9", "상세불명의 천식", "Asthma unspecified", "195967001", 317009),
    _dx(
        "gerd",
        "K21.9",
        "식도염을 동반하지 않은 위-식도역류병",
        "Gastro-oesophageal reflux disease without oesophagitis",
        "235595009",
        318800,
    ),
    _dx(
        "oa_knee",
        "M17.9",
        "상세불명의 무릎관절증",
        "Gonarthrosis unspecified",
        "239873007",
        4079750,
    ),
    _dx(
        "osteoporosis",
        "M81.9",
        "상세불명의 골다공증",
        "Osteoporosis unspecified",
        "64859006",
        80502,
    ),
    _dx("gout", "M10.9", "상세불명의 통풍", "Gout unspecified", "90560007", 440674),
    _dx(
        "depression",
        "F32.9",
        "상세불명의 우울병 에피소드",
        "Depressive episode unspecified",
        "36923009",
        4282096,
    ),
    _dx("anemia", "D64.9", "상세불명의 빈혈", "Anaemia unspecified", "271737000", 439777),
    # acute
    _dx(
        "ami",
        "I21.9",
        "상세불명의 급성 심근경색증",
        "Acute myocardial infarction unspecified",
        "22298006",
        4329847,
    ),
    _dx("pneumonia", "J18.9", "상세불명의 폐렴", "Pneumonia unspecified", "233604007", 255848),
    _dx(
        "bronchitis",
        "J20.9",
        "상세불명의 급성 기관지염",
        "Acute bronchitis unspecified",
        "10509002",
        260139,
    ),
    _dx("strep", "J02.0", "연쇄알균 인두염", "Streptococcal pharyngitis", "43878008", 28060),
    _dx(
        "uti",
        "N39.0",
        "부위가 명시되지 않은 요로감염",
        "Urinary tract infection site not specified",
        "68566005",
        81902,
    ),
    _dx(
        "sinusitis",
        "J32.9",
        "상세불명의 만성 부비동염",
        "Chronic sinusitis unspecified",
        "40055000",
        257012,
    ),
    _dx(
        "rhinitis",
        "J30.2",
        "기타 계절성 알레르기비염",
        "Other seasonal allergic rhinitis",
        "367498001",
        4280726,
    ),
    _dx(
        "covid",
        "U07.1",
        "코로나바이러스감염-19 (바이러스가 확인된 경우)",
        "COVID-19 virus identified",
        "840539006",
        37311061,
    ),
    _dx(
        "gallstone",
        "K80.2",
        "담낭염이 없는 담낭의 결석",
        "Calculus of gallbladder without cholecystitis",
        "235919008",
        196456,
    ),
    _dx("appendicitis", "K37", "상세불명의 충수염", "Unspecified appendicitis", "74400008", 440448),
    _dx("headache", "R51", "두통", "Headache", "25064002", 378253),
    _dx(
        "hand_wound",
        "S61.9",
        "손목 및 손의 상세불명 부분의 열린상처",
        "Open wound of wrist and hand part unspecified",
        "284549007",
        4113008,
    ),
    # a KCD-7 code whose standard concept is an Observation: routed to the observation table
    _dx(
        "unemployment",
        "Z56.0",
        "상세불명의 실업",
        "Unemployment unspecified",
        "73438004",
        4251171,
        domain="Observation",
    ),
)

DRUGS: tuple[Drug, ...] = (
    Drug(
        "metformin",
        "643504080",
        "GJD0001",
        "860975",
        40163924,
        "Metformin HCl 500mg ER tab",
        "메트포르민염산염서방정500mg",
        "oral",
        2,
        (30, 60, 90),
    ),
    Drug(
        "amlodipine",
        "645301920",
        "GJD0002",
        "197361",
        1332419,
        "Amlodipine 5mg tab",
        "암로디핀정5mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "losartan",
        "641803120",
        "GJD0003",
        "979492",
        40185304,
        "Losartan potassium 50mg tab",
        "로사르탄칼륨정50mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "atorvastatin",
        "648102350",
        "GJD0004",
        "259255",
        1545959,
        "Atorvastatin 80mg tab",
        "아토르바스타틴정80mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "simvastatin",
        "642701460",
        "GJD0005",
        "312961",
        1539411,
        "Simvastatin 20mg tab",
        "심바스타틴정20mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "aspirin",
        "645900810",
        "GJD0006",
        "243670",
        19059056,
        "Aspirin 81mg EC tab",
        "아스피린장용정81mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "clopidogrel",
        "649503750",
        "GJD0007",
        "309362",
        19075601,
        "Clopidogrel 75mg tab",
        "클로피도그렐정75mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "furosemide",
        "644201400",
        "GJD0008",
        "313988",
        957136,
        "Furosemide 40mg tab",
        "푸로세미드정40mg",
        "oral",
        1,
        (30, 60),
    ),
    Drug(
        "warfarin",
        "643900050",
        "GJD0009",
        "855332",
        40163554,
        "Warfarin sodium 5mg tab",
        "와파린나트륨정5mg",
        "oral",
        1,
        (30, 60),
    ),
    Drug(
        "amoxicillin",
        "642103500",
        "GJD0010",
        "308192",
        19073188,
        "Amoxicillin 500mg tab",
        "아목시실린정500mg",
        "oral",
        3,
        (5, 7),
    ),
    Drug(
        "amox_clav",
        "644302510",
        "GJD0011",
        "562251",
        1713671,
        "Amoxicillin/clavulanate 250/125mg tab",
        "아목시실린클라불란산칼륨정375mg",
        "oral",
        3,
        (5, 7, 10),
    ),
    Drug(
        "cefuroxime",
        "646202500",
        "GJD0012",
        "309097",
        19075001,
        "Cefuroxime axetil 250mg tab",
        "세푸록심악세틸정250mg",
        "oral",
        2,
        (5, 7),
    ),
    Drug(
        "azithromycin",
        "641502500",
        "GJD0013",
        "308460",
        19073777,
        "Azithromycin 250mg tab",
        "아지트로마이신정250mg",
        "oral",
        1,
        (3, 5),
    ),
    Drug(
        "nitrofurantoin",
        "647300500",
        "GJD0014",
        "311995",
        920334,
        "Nitrofurantoin macrocrystals 50mg cap",
        "니트로푸란토인캡슐50mg",
        "oral",
        4,
        (5, 7),
    ),
    Drug(
        "acetaminophen",
        "645105000",
        "GJD0015",
        "198440",
        19020053,
        "Acetaminophen 500mg tab",
        "아세트아미노펜정500mg",
        "oral",
        3,
        (3, 5),
    ),
    Drug(
        "ibuprofen",
        "643602000",
        "GJD0016",
        "310965",
        19078461,
        "Ibuprofen 200mg tab",
        "이부프로펜정200mg",
        "oral",
        3,
        (3, 5, 7),
    ),
    Drug(
        "loratadine",
        "642901000",
        "GJD0017",
        "311372",
        1107882,
        "Loratadine 10mg tab",
        "로라타딘정10mg",
        "oral",
        1,
        (14, 30),
    ),
    Drug(
        "fluticasone_salmeterol",
        "649801250",
        "GJD0018",
        "896209",
        40169281,
        "Fluticasone/salmeterol 250/50 DPI 60 doses",
        "플루티카손살메테롤흡입제250/50",
        "inhalation",
        1 / 30,
        (30, 60, 90),
    ),
    Drug(
        "albuterol_neb",
        "645600250",
        "GJD0019",
        "245314",
        1154380,
        "Albuterol 5mg/mL inhalation solution",
        "살부타몰흡입액5mg/mL",
        "inhalation",
        3,
        (1, 3),
    ),
    Drug(
        "allopurinol",
        "643101000",
        "GJD0020",
        "197319",
        1167323,
        "Allopurinol 100mg tab",
        "알로푸리놀정100mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "alendronate",
        "648600100",
        "GJD0021",
        "904419",
        40173590,
        "Alendronic acid 10mg tab",
        "알렌드론산정10mg",
        "oral",
        1,
        (30, 60, 90),
    ),
    Drug(
        "sertraline",
        "647701000",
        "GJD0022",
        "312938",
        739207,
        "Sertraline 100mg tab",
        "설트랄린정100mg",
        "oral",
        1,
        (30, 60),
    ),
    Drug(
        "ferrous_sulfate",
        "641203250",
        "GJD0023",
        "310325",
        19077344,
        "Ferrous sulfate 325mg tab",
        "황산제일철정325mg",
        "oral",
        1,
        (30, 60),
    ),
    # inpatient and emergency (injections)
    Drug(
        "pip_tazo",
        "652204500",
        "GJD0024",
        "1659149",
        46275444,
        "Piperacillin/tazobactam 4.5g inj",
        "피페라실린타조박탐주4.5g",
        "intravenous",
        3,
        (1,),
    ),
    Drug(
        "normal_saline",
        "653100900",
        "GJD0025",
        "313002",
        19079524,
        "Sodium chloride 0.9% inj",
        "생리식염주사액0.9%",
        "intravenous",
        2,
        (1,),
    ),
    Drug(
        "enoxaparin",
        "654400400",
        "GJD0026",
        "854235",
        40160973,
        "Enoxaparin 40mg/0.4mL prefilled syringe",
        "에녹사파린나트륨주40mg",
        "subcutaneous",
        1,
        (1,),
    ),
    Drug(
        "ondansetron",
        "655200400",
        "GJD0027",
        "1740467",
        35605482,
        "Ondansetron 4mg/2mL inj",
        "온단세트론주4mg",
        "intravenous",
        2,
        (1,),
    ),
    Drug(
        "morphine",
        "656100500",
        "GJD0028",
        "1732136",
        35605858,
        "Morphine sulfate 5mg/mL inj",
        "황산모르핀주5mg",
        "intravenous",
        1,
        (1,),
    ),
    Drug(
        "furosemide_inj",
        "658200200",
        "GJD0030",
        "1719286",
        35603224,
        "Furosemide 100mg/10mL inj",
        "푸로세미드주100mg",
        "intravenous",
        1,
        (1,),
    ),
    Drug(
        "remdesivir",
        "657301000",
        "GJD0029",
        "2284960",
        37499275,
        "Remdesivir 100mg inj",
        "렘데시비르주100mg",
        "intravenous",
        1,
        (1,),
    ),
)

LABS: tuple[Lab, ...] = (
    Lab("hgb", "718-7", 3000963, "B1020", "GJL0001", "Hemoglobin", "혈색소", "g/dL", 8713,
        12.0, 16.0, 13.8, 1.4, 1, 25.0, 85.0),
    Lab("wbc", "6690-2", 3000905, "B1010", "GJL0002", "WBC count", "백혈구수", "10*3/uL", 8848,
        4.0, 10.0, 7.0, 1.8, 2, 200.0, 950.0),
    Lab("plt", "777-3", 3024929, "B1050", "GJL0003", "Platelet count", "혈소판수", "10*3/uL",
        8848, 150.0, 400.0, 250.0, 55.0, 0, 2000.0, 9000.0),
    Lab("glucose", "2345-7", 3004501, "B2710", "GJL0004", "Glucose", "포도당", "mg/dL", 8840,
        70.0, 99.0, 100.0, 15.0, 0, 1500.0, 4500.0),
    Lab("hba1c", "4548-4", 3004410, "D3020", "GJL0005", "Hemoglobin A1c", "당화혈색소", "%",
        8554, 4.0, 5.6, 5.6, 0.4, 1, 20.0, 65.0),
    Lab("creatinine", "2160-0", 3016723, "B2750", "GJL0006", "Creatinine", "크레아티닌",
        "mg/dL", 8840, 0.6, 1.2, 0.9, 0.18, 2, 25.0, 95.0),
    Lab("bun", "3094-0", 3013682, "B2740", "GJL0007", "BUN", "혈액요소질소", "mg/dL", 8840,
        8.0, 20.0, 14.0, 4.0, 0, 300.0, 950.0),
    Lab("chol", "2093-3", 3027114, "B2720", "GJL0008", "Total cholesterol", "총콜레스테롤",
        "mg/dL", 8840, 120.0, 200.0, 185.0, 32.0, 0, 1000.0, 9800.0),
    Lab("hdl", "2085-9", 3007070, "B2721", "GJL0009", "HDL cholesterol", "HDL콜레스테롤",
        "mg/dL", 8840, 40.0, 60.0, 52.0, 11.0, 0, 250.0, 950.0),
    Lab("tg", "2571-8", 3022192, "B2722", "GJL0010", "Triglyceride", "중성지방", "mg/dL", 8840,
        30.0, 150.0, 130.0, 55.0, 0, 10000.0, 25000.0),
    Lab("ldl", "18262-6", 3009966, "B2723", "GJL0011", "LDL cholesterol (direct)",
        "LDL콜레스테롤", "mg/dL", 8840, 0.0, 130.0, 110.0, 28.0, 0, 1000.0, 9000.0),
    Lab("sodium", "2951-2", 3019550, "B2801", "GJL0012", "Sodium", "나트륨", "mmol/L", 8753,
        135.0, 145.0, 140.0, 2.5, 0, 200.0, 1400.0),
    Lab("potassium", "2823-3", 3023103, "B2802", "GJL0013", "Potassium", "칼륨", "mmol/L", 8753,
        3.5, 5.1, 4.2, 0.35, 1, 12.0, 45.0),
    Lab("alt", "1742-6", 3006923, "B2591", "GJL0014", "ALT", "알라닌아미노전이효소", "[U]/L",
        8645, 7.0, 40.0, 24.0, 9.0, 0, 10000.0, 99000.0),
    Lab("ast", "1920-8", 3013721, "B2590", "GJL0015", "AST", "아스파르트산아미노전이효소",
        "[U]/L", 8645, 8.0, 40.0, 25.0, 8.0, 0, 10000.0, 99000.0),
    Lab("crp", "1988-5", 3020460, "D0011", "GJL0016", "C-reactive protein", "C반응단백",
        "mg/L", 8751, 0.0, 5.0, 2.0, 1.5, 1, 600.0, 9999.0),
)  # fmt: skip

PROCEDURES: tuple[Procedure, ...] = (
    Procedure("ecg", "E6541", "29303009", 4163951, "Electrocardiogram 12 leads", "심전도검사"),
    Procedure("cxr", "G2101", "399208008", 4163872, "Chest X-ray", "흉부단순촬영"),
    Procedure("ct_head", "HA401", "303653007", 4125350, "CT of head", "두부전산화단층촬영"),
    Procedure("echo", "E6543", "40701008", 4230911, "Echocardiography", "심장초음파검사"),
    Procedure("colonoscopy", "E7660", "73761001", 4249893, "Colonoscopy", "대장내시경검사"),
    Procedure("dressing", "M0111", "385949008", 4301575, "Dressing change", "단순처치"),
    Procedure("suture", "M0031", "288086009", 4125906, "Suture of open wound", "창상봉합술"),
    Procedure("lap_chole", "Q7380", "45595009", 4163971, "Laparoscopic cholecystectomy",
              "복강경하담낭절제술"),
    Procedure("appendectomy", "Q2861", "80146002", 4198190, "Appendectomy", "충수절제술"),
    Procedure("pci", "M6551", "415070008", 4216130, "Percutaneous coronary intervention",
              "경피적관상동맥중재술"),
    Procedure("hemodialysis", "O7020", "302497006", 4120120, "Hemodialysis", "혈액투석"),
    Procedure("bone_density", "HC341", "312681000", 4195803, "Bone density scan", "골밀도검사"),
    Procedure("nebulizer", "M6631", "56251003", 4206920, "Nebulizer therapy", "네뷸라이저치료"),
)  # fmt: skip

# CVX is not in the demo vocabulary: concept 0 (see VOCABULARY_GAPS).
IMMUNIZATIONS: tuple[Coded, ...] = (
    Coded("flu", "140", "Influenza seasonal injectable preservative free", 0),
    Coded("covid_mrna", "208", "SARS-COV-2 (COVID-19) vaccine mRNA 30 mcg/0.3mL dose", 0),
    Coded("ppsv23", "33", "Pneumococcal polysaccharide vaccine 23 valent", 0),
    Coded("pcv13", "133", "Pneumococcal conjugate vaccine 13 valent", 0),
    Coded("tdap", "115", "Tdap", 0),
    Coded("hepb", "43", "Hepatitis B vaccine adult dosage", 0),
    Coded("zoster", "187", "Zoster vaccine recombinant", 0),
)

ALLERGIES: tuple[Coded, ...] = (
    Coded("latex", "300916003", "Allergy to latex", 4102123),
    Coded("grass_pollen", "418689008", "Allergy to grass pollen", 4302207),
    Coded("tree_pollen", "419263009", "Allergy to tree pollen", 4306014),
    Coded("mold", "419474003", "Allergy to mold", 4304110),
    Coded("dust_mite", "232350006", "Allergy to dust mite protein", 4048169),
    Coded("dander", "232347008", "Allergy to animal dander", 439406),
    Coded("wheat", "420174000", "Allergy to wheat", 4169137),
    Coded("dairy", "425525006", "Allergy to dairy food", 4139681),
)

DEVICES: tuple[Coded, ...] = (
    Coded("stent", "705643001", "Coronary artery stent", 45767945),
    Coded("pacemaker", "706004007", "Implantable cardiac pacemaker", 45772840),
    Coded("icd", "72506001", "Implantable defibrillator", 4217646),
    Coded("face_mask", "261352009", "Face mask", 4126216),
)

# Code systems the FHIR site uses that the bundled demo vocabulary lacks: their codes
# are expected to land as concept 0 with the demo vocabulary (not planted defects).
VOCABULARY_GAPS = {
    "CVX": "CVX is not in the bundled demo vocabulary; a full Athena download maps these codes",
}

# Codes planted as unmapped: in no code map and not in the vocabulary. By code system
# as the file writes it.
UNMAPPED = {
    "KCD7": "U99.9",
    "EDI_DRUG": "699999999",
    "EDI_PROC": "Z9999",
    "EDI_LAB": "B9999",
    "LOINC": "99999-9",
    "SNOMED": "999999999",
    "GWANGJU_LAB": "GJL9999",
    "GWANGJU_DRUG": "GJD9999",
}

# The concept name of each international code the FHIR site sends (its coding.display),
# as in the demo vocabulary.
FHIR_DISPLAY: dict[tuple[str, str], str] = {
    ("SNOMED", "44054006"): "Type 2 diabetes mellitus",
    ("SNOMED", "127013003"): "Disorder of kidney due to diabetes mellitus",
    ("SNOMED", "59621000"): "Essential hypertension",
    ("SNOMED", "55822004"): "Hyperlipidemia",
    ("SNOMED", "433144002"): "Chronic kidney disease stage 3",
    ("SNOMED", "49436004"): "Atrial fibrillation",
    ("SNOMED", "84114007"): "Heart failure",
    ("SNOMED", "53741008"): "Coronary arteriosclerosis",
    ("SNOMED", "195967001"): "Asthma",
    ("SNOMED", "235595009"): "Gastroesophageal reflux disease",
    ("SNOMED", "239873007"): "Osteoarthritis of knee",
    ("SNOMED", "64859006"): "Osteoporosis",
    ("SNOMED", "90560007"): "Gout",
    ("SNOMED", "36923009"): "Major depression, single episode",
    ("SNOMED", "271737000"): "Anemia",
    ("SNOMED", "22298006"): "Myocardial infarction",
    ("SNOMED", "233604007"): "Pneumonia",
    ("SNOMED", "10509002"): "Acute bronchitis",
    ("SNOMED", "43878008"): "Streptococcal sore throat",
    ("SNOMED", "68566005"): "Urinary tract infectious disease",
    ("SNOMED", "40055000"): "Chronic sinusitis",
    ("SNOMED", "367498001"): "Seasonal allergic rhinitis",
    ("SNOMED", "840539006"): "COVID-19",
    ("SNOMED", "235919008"): "Gallstone",
    ("SNOMED", "74400008"): "Appendicitis",
    ("SNOMED", "25064002"): "Headache",
    ("SNOMED", "284549007"): "Laceration of hand",
    ("SNOMED", "73438004"): "Unemployed",
    ("SNOMED", "29303009"): "Electrocardiographic procedure",
    ("SNOMED", "399208008"): "Plain chest X-ray",
    ("SNOMED", "303653007"): "CT of head",
    ("SNOMED", "40701008"): "Echocardiography",
    ("SNOMED", "73761001"): "Colonoscopy",
    ("SNOMED", "385949008"): "Dressing change management",
    ("SNOMED", "288086009"): "Suture open wound",
    ("SNOMED", "45595009"): "Laparoscopic cholecystectomy",
    ("SNOMED", "80146002"): "Appendectomy",
    ("SNOMED", "415070008"): "Percutaneous coronary intervention",
    ("SNOMED", "302497006"): "Hemodialysis",
    ("SNOMED", "312681000"): "Bone density scan",
    ("SNOMED", "56251003"): "Nebulizer therapy",
    ("LOINC", "718-7"): "Hemoglobin [Mass/volume] in Blood",
    ("LOINC", "6690-2"): "Leukocytes [#/volume] in Blood by Automated count",
    ("LOINC", "777-3"): "Platelets [#/volume] in Blood by Automated count",
    ("LOINC", "2345-7"): "Glucose [Mass/volume] in Serum or Plasma",
    ("LOINC", "4548-4"): "Hemoglobin A1c/Hemoglobin.total in Blood",
    ("LOINC", "2160-0"): "Creatinine [Mass/volume] in Serum or Plasma",
    ("LOINC", "3094-0"): "Urea nitrogen [Mass/volume] in Serum or Plasma",
    ("LOINC", "2093-3"): "Cholesterol [Mass/volume] in Serum or Plasma",
    ("LOINC", "2085-9"): "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
    ("LOINC", "2571-8"): "Triglyceride [Mass/volume] in Serum or Plasma",
    ("LOINC", "18262-6"): "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
    ("LOINC", "2951-2"): "Sodium [Moles/volume] in Serum or Plasma",
    ("LOINC", "2823-3"): "Potassium [Moles/volume] in Serum or Plasma",
    ("LOINC", "1742-6"): "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    (
        "LOINC",
        "1920-8",
    ): "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    ("LOINC", "1988-5"): "C reactive protein [Mass/volume] in Serum or Plasma",
    ("RxNorm", "860975"): "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
    ("RxNorm", "197361"): "amlodipine 5 MG Oral Tablet",
    ("RxNorm", "979492"): "losartan potassium 50 MG Oral Tablet",
    ("RxNorm", "259255"): "atorvastatin 80 MG Oral Tablet",
    ("RxNorm", "312961"): "simvastatin 20 MG Oral Tablet",
    ("RxNorm", "243670"): "aspirin 81 MG Oral Tablet",
    ("RxNorm", "309362"): "clopidogrel 75 MG Oral Tablet",
    ("RxNorm", "313988"): "furosemide 40 MG Oral Tablet",
    ("RxNorm", "855332"): "warfarin sodium 5 MG Oral Tablet",
    ("RxNorm", "308192"): "amoxicillin 500 MG Oral Tablet",
    ("RxNorm", "562251"): "amoxicillin 250 MG / clavulanate 125 MG Oral Tablet",
    ("RxNorm", "309097"): "cefuroxime 250 MG Oral Tablet",
    ("RxNorm", "308460"): "azithromycin 250 MG Oral Tablet",
    ("RxNorm", "311995"): "nitrofurantoin, macrocrystals 50 MG Oral Capsule",
    ("RxNorm", "198440"): "acetaminophen 500 MG Oral Tablet",
    ("RxNorm", "310965"): "ibuprofen 200 MG Oral Tablet",
    ("RxNorm", "311372"): "loratadine 10 MG Oral Tablet",
    (
        "RxNorm",
        "896209",
    ): (
        "60 ACTUAT fluticasone propionate 0.25 MG/ACTUAT / salmeterol 0.05 MG/ACTUAT "
        "Dry Powder Inhaler"
    ),
    ("RxNorm", "245314"): "albuterol 5 MG/ML Inhalation Solution",
    ("RxNorm", "197319"): "allopurinol 100 MG Oral Tablet",
    ("RxNorm", "904419"): "alendronic acid 10 MG Oral Tablet",
    ("RxNorm", "312938"): "sertraline 100 MG Oral Tablet",
    ("RxNorm", "310325"): "ferrous sulfate 325 MG Oral Tablet",
    ("RxNorm", "1659149"): "piperacillin 4000 MG / tazobactam 500 MG Injection",
    ("RxNorm", "313002"): "sodium chloride 9 MG/ML Injectable Solution",
    ("RxNorm", "854235"): "0.4 ML enoxaparin sodium 100 MG/ML Prefilled Syringe",
    ("RxNorm", "1740467"): "2 ML ondansetron 2 MG/ML Injection",
    ("RxNorm", "1732136"): "1 ML morphine sulfate 5 MG/ML Injection",
    ("RxNorm", "1719286"): "10 ML furosemide 10 MG/ML Injection",
    ("RxNorm", "2284960"): "remdesivir 100 MG Injection",
}

DIAGNOSIS = {d.key: d for d in DIAGNOSES}
DRUG = {d.key: d for d in DRUGS}
LAB = {lab.key: lab for lab in LABS}
PROCEDURE = {p.key: p for p in PROCEDURES}
IMMUNIZATION = {i.key: i for i in IMMUNIZATIONS}
ALLERGY = {a.key: a for a in ALLERGIES}
DEVICE = {d.key: d for d in DEVICES}


def canonical_kcd(code: str) -> str:
    """A KCD-7 code in the code maps' form: upper case, no dot, no spaces."""
    return code.strip().upper().replace(".", "").replace(" ", "")


def code_map_rows() -> dict[str, list[tuple[str, ...]]]:
    """The rows of each code map file under mappings/codemaps/, by file name."""

    def row(code: str, vocabulary: str, description: str, target: int, target_vocab: str):
        return (
            code,
            "0",
            vocabulary,
            description,
            str(target),
            target_vocab,
            VALID_START,
            VALID_END,
            "",
        )

    kcd = [
        row(
            canonical_kcd(d.kcd),
            "KCD7",
            f"{d.name_ko} ({d.name_en})",
            target,
            "SNOMED",
        )
        for d in DIAGNOSES
        for target in d.targets
    ]
    edi = [row(d.edi, "EDI", f"{d.name_ko} ({d.name_en})", d.concept, "RxNorm") for d in DRUGS]
    edi += [
        row(p.edi, "EDI", f"{p.name_ko} ({p.name_en})", p.concept, "SNOMED") for p in PROCEDURES
    ]
    edi += [
        row(lab.edi, "EDI", f"{lab.name_ko} ({lab.name_en})", lab.concept, "LOINC") for lab in LABS
    ]
    local = [
        row(lab.local, "GWANGJU_LAB", f"{lab.name_ko} ({lab.name_en})", lab.concept, "LOINC")
        for lab in LABS
    ]
    local += [
        row(d.local, "GWANGJU_DRUG", f"{d.name_ko} ({d.name_en})", d.concept, "RxNorm")
        for d in DRUGS
    ]
    return {
        "kcd7.csv": sorted(kcd),
        "edi.csv": sorted(edi),
        "gwangju_local.csv": sorted(local, key=lambda r: (r[2], r[0], r[4])),
    }


def code_map_text(rows: list[tuple[str, ...]]) -> str:
    """A code map file's text: comma-separated, LF line ends, no field needs quoting."""
    lines = [",".join(CODEMAP_HEADER)]
    for r in rows:
        if any("," in f or '"' in f or "\n" in f for f in r):
            raise ValueError(f"code map field needs quoting: {r}")
        lines.append(",".join(r))
    return "\n".join(lines) + "\n"


def write_code_maps(folder: Path) -> list[Path]:
    """Write kcd7.csv, edi.csv and gwangju_local.csv into `folder` (UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in code_map_rows().items():
        path = folder / name
        path.write_text(code_map_text(rows), encoding="utf-8", newline="")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m omop_etl.demo.catalogue mappings/codemaps
    import sys

    for path in write_code_maps(Path(sys.argv[1] if len(sys.argv) > 1 else "mappings/codemaps")):
        print(path)
