"""The edit-quality benchmark (bench/edit_quality.py): worlds (toy worlds, their clips and
detectors), methods by name, measures, the protocol's runner and its report."""
