"""Synthetic demo data: a deterministic five-hospital export with planted defects.

``omop_etl.demo.generate.generate(out_dir, patients, seed)`` writes it (``python -m
omop_etl.demo.generate``); ``omop_etl.demo.catalogue`` holds the clinical catalogue it
draws from and generates the code maps under ``mappings/codemaps/``. Every file is
synthetic: there are no real patients.
"""
