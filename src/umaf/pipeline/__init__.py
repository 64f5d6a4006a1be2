"""Pipelines as files: ``umaf run pipeline.yaml`` and ``umaf demo`` (the shipped ``examples/demo.yaml``).

``spec`` parses and checks a pipeline file without loading any model; ``run`` executes it.
"""

from pathlib import Path

from umaf.formatting import format_results
from umaf.pipeline.run import print_summary, run_pipeline
from umaf.pipeline.spec import (
    AdapterSpec,
    EvaluateSpec,
    FingerprintRef,
    PipelineSpec,
    check_ready,
    load_pipeline,
    parse_pipeline,
)

#: The pipeline files shipped with UMAF (``examples/`` in the repository links here).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"

__all__ = [
    "EXAMPLES_DIR",
    "AdapterSpec",
    "EvaluateSpec",
    "FingerprintRef",
    "PipelineSpec",
    "check_ready",
    "format_results",
    "load_pipeline",
    "parse_pipeline",
    "print_summary",
    "run_pipeline",
]
