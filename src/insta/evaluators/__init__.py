"""Evaluators of selection, above the methods (as sentence-transformers keeps its evaluators): leave-one-
instruction-out identification (:mod:`.identification`, its tables in :mod:`.identification_table`) and methods
scored against a measured transfer matrix (:mod:`.methods_vs_matrix`, its report sections in
:mod:`.matrix_report`). ``insta eval-selection`` stands on this package alone."""
